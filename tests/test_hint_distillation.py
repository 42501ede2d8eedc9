"""Layer similarity, clustered hint points and the ``hint_distillation`` entry, on real NNCF models."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys

import numpy as np
import openvino as ov
import pytest
import torch
from conftest import digits_config
from torch.utils.data import DataLoader

from nncf_lossless import create_compressed_model
from nncf_lossless.algorithms.hint_distillation.hint_points import (
    candidate_layers,
    cluster_in_depth,
    select_hint_points,
    stage_ends,
)
from nncf_lossless.algorithms.hint_distillation.similarity import SIMILARITY, distance_matrix
from nncf_lossless.errors import ConfigError
from nncf_lossless.models import build_model
from nncf_lossless.training.trainer import run

METRICS = sorted(SIMILARITY)


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12))
    y = np.tanh(x @ rng.normal(size=(12, 20))) + 0.3 * rng.normal(size=(200, 20))
    return x, y


@pytest.mark.parametrize("metric", METRICS)
def test_similarity_is_one_with_itself_and_invariant_to_rotation_and_scale(metric, features):
    x, y = features
    sim = SIMILARITY[metric]
    assert sim(x, x) == pytest.approx(1.0, abs=1e-6)
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(12, 12)))
    base = sim(x, y)
    assert 0.05 < base < 0.999
    assert sim(x @ q, y) == pytest.approx(base, abs=1e-6)
    assert sim(3.7 * x, 0.2 * y) == pytest.approx(base, abs=1e-6)
    assert sim(x, y) == pytest.approx(sim(y, x), abs=1e-9)


@pytest.mark.parametrize("metric", METRICS)
def test_distance_matrix_is_symmetric_with_zero_diagonal(metric, features):
    x, y = features
    d = distance_matrix([x, y, x[:, :5], np.random.default_rng(2).normal(size=(200, 7))], metric)
    np.testing.assert_allclose(d, d.T)
    np.testing.assert_allclose(np.diag(d), 0, atol=1e-6)
    assert d[0, 1] > 0 and d.max() <= 1


def _blocks(sizes, near=0.1, far=0.9):
    n = sum(sizes)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    d = np.where(labels[:, None] == labels[None, :], near, far) + 0.01 * np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    np.fill_diagonal(d, 0)
    return d, labels


def test_clustering_returns_k_distinct_points_in_depth_order_one_per_group():
    d, labels = _blocks([3, 4, 3])
    medoids, assignment = cluster_in_depth(d, 3, seed=0)
    assert medoids == sorted(set(medoids)) and len(medoids) == 3
    assert [labels[m] for m in medoids] == [0, 1, 2]
    assert list(np.unique(assignment, return_inverse=True)[1]) == list(labels)
    assert cluster_in_depth(d, 3, seed=0) == (medoids, assignment)
    rng = np.random.default_rng(5)
    noisy = rng.uniform(size=(12, 12))
    noisy = (noisy + noisy.T) / 2
    np.fill_diagonal(noisy, 0)
    for k in (1, 4, 12):
        first = cluster_in_depth(noisy, k, seed=3)
        assert first == cluster_in_depth(noisy, k, seed=3)  # deterministic for a seed
        assert len(set(first[0])) == k and first[0] == sorted(first[0])
    with pytest.raises(ConfigError, match="num_points"):
        cluster_in_depth(noisy, 13)


def test_candidates_are_blocks_and_stage_ends_the_last_block_of_each_stage():
    resnet = build_model({"name": "resnet20"}, num_classes=10, in_channels=1)
    candidates = candidate_layers(resnet)
    assert candidates == ["stem"] + [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert stage_ends(candidates) == ["layer1.2", "layer2.2", "layer3.2"]
    assert candidate_layers(build_model({"name": "digits_cnn"}, num_classes=10, in_channels=1)) == [
        "features.0", "features.1", "features.3"]


def test_auto_selection_on_a_trained_teacher(reference, calibration):
    selection = select_hint_points(reference, calibration, num_points=2, samples=100)
    assert selection.samples == 100 and selection.candidates == ["features.0", "features.1", "features.3"]
    assert len(selection.points) == 2 and all(p in selection.candidates for p in selection.points)
    assert selection.distances.shape == (3, 3)


def _hint_config(**entry):
    return digits_config(compression=[{"algorithm": "hint_distillation", "samples": 64, **entry}])


def test_hint_loss_is_zero_when_the_student_is_the_teacher(reference, calibration, digits):
    ctrl, model = create_compressed_model(copy.deepcopy(reference), _hint_config(hint_points=["features.0", "features.3"]),
                                          calibration)
    x, y = next(iter(DataLoader(digits.train, batch_size=32)))
    model.eval()
    assert ctrl.loss(model(x), y, x).detach().item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        model.features[0][0].weight.mul_(1.1)
    assert float(ctrl.loss(model(x), y, x)) > 1e-4


def test_with_distillation_the_teacher_runs_once_per_step(reference, calibration, digits):
    entries = [{"algorithm": "label_preserving_distillation"},
               {"algorithm": "hint_distillation", "hint_points": ["features.0", "features.3"]}]
    ctrl, model = create_compressed_model(copy.deepcopy(reference), digits_config(compression=entries), calibration)
    distill, hints = ctrl.algorithms
    calls = []
    hints.teacher.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        model.features[0][0].weight.mul_(1.05)  # a student that differs, so the hint loss is not zero
    for x, y in itertools.islice(DataLoader(digits.train, batch_size=32), 2):
        outputs = model(x)
        calls.clear()
        assert torch.isfinite(ctrl.loss(outputs, y, x)) and len(calls) == 1
    # From the forward distillation ran, the hint term is the one a forward of its own gives.
    outputs = model(x)
    distill.loss(outputs, y, x)
    calls.clear()
    shared = float(hints.loss(outputs, y, x))
    assert not calls and shared > 0
    outputs = model(x)
    own = float(hints.loss(outputs, y, x))
    assert len(calls) == 1 and own == pytest.approx(shared, rel=1e-6)


def test_adapters_train_but_are_not_exported(reference, calibration, digits, tmp_path):
    entries = [{"algorithm": "quantization", "subset_size": 64},
               {"algorithm": "hint_distillation", "hint_points": ["features.1"], "student_points": {"features.1": "features.0"}}]
    ctrl, model = create_compressed_model(copy.deepcopy(reference), digits_config(compression=entries), calibration)
    assert ctrl.statistics()["hint_distillation"]["adapters"] == ["features.1"]
    adapter = ctrl.algorithms[-1].adapter("features.1")
    assert adapter.in_channels == 16 and adapter.out_channels == 32
    assert {id(p) for p in adapter.parameters()} <= {id(p) for p in ctrl.trainable_parameters()}
    optimizer = torch.optim.SGD(ctrl.trainable_parameters(), lr=0.1)
    before = adapter.weight.detach().clone()
    x, y = next(iter(DataLoader(digits.train, batch_size=32)))
    optimizer.zero_grad()
    ctrl.loss(model(x), y, x).backward()
    optimizer.step()
    assert not torch.equal(before, adapter.weight)
    plain_ctrl, _ = create_compressed_model(copy.deepcopy(reference), digits_config(compression=entries[:1]), calibration)
    convs = {}
    for name, c in (("hints", ctrl), ("plain", plain_ctrl)):
        ir = ov.Core().read_model(c.export(tmp_path / name)["compressed"])
        convs[name] = sorted(tuple(op.input(1).get_partial_shape().to_shape()) for op in ir.get_ops()
                             if op.get_type_name() == "Convolution")
    assert convs["hints"] == convs["plain"] and (32, 16, 1, 1) not in convs["hints"]
    restored, _ = create_compressed_model(copy.deepcopy(reference), digits_config(compression=entries),
                                          compression_state=ctrl.state_dict())
    torch.testing.assert_close(restored.algorithms[-1].adapter("features.1").weight, adapter.weight)


def test_hints_only_epochs_train_on_hints_alone(reference, calibration, digits):
    ctrl, model = create_compressed_model(copy.deepcopy(reference), _hint_config(hint_points=["features.1"], hints_only_epochs=1,
                                                                                 weight_after_hints=0.0), calibration)
    x, y = next(iter(DataLoader(digits.train, batch_size=32)))
    with torch.no_grad():
        model.features[1][0].weight.mul_(0.5)
    ctrl.scheduler.epoch_step()
    assert ctrl.owns_task_loss and float(ctrl.loss(model(x), y, x)) > 0
    ctrl.scheduler.epoch_step()
    assert not ctrl.owns_task_loss and float(ctrl.loss(model(x), y, x)) == 0.0


def test_unknown_hint_point_is_a_one_line_config_error(reference, calibration):
    with pytest.raises(ConfigError, match=r"compression\[0\]\.hint_points\[1\]: no module named 'nope'"):
        create_compressed_model(copy.deepcopy(reference), _hint_config(hint_points=["features.0", "nope"]), calibration)


def test_with_quantization_distillation_and_frozen_bn_in_the_trainer(tmp_path):
    cfg = digits_config(training={"seed": 0, "epochs": 2, "batch_size": 64, "lr": 1e-3, "reference": {"epochs": 2, "lr": 3e-3}},
                        compression=[{"algorithm": "quantization", "subset_size": 64},
                                     {"algorithm": "label_preserving_distillation"}, {"algorithm": "frozen_bn"},
                                     {"algorithm": "hint_distillation", "num_points": 2, "samples": 128}],
                        export={"enabled": False})
    results = run(cfg, tmp_path)
    stats = results["statistics"]["hint_distillation"]
    assert len(stats["hint_points"]) == 2 and stats["selection"]["samples"] == 128
    assert results["statistics"]["frozen_bn"]["frozen"] and all(np.isfinite(h["train_loss"]) for h in results["history"])


def test_select_hints_cli_writes_json_and_heatmap(tmp_path):
    out = tmp_path / "hints"
    proc = subprocess.run([sys.executable, "-m", "nncf_lossless", "select-hints", "--config", "configs/digits_int8.json",
                           "--set", "model.name=resnet20", "--set", "training.reference.epochs=1",
                           "--output-dir", str(out), "--samples", "200", "--num-points", "3", "--metric", "cca"],
                          capture_output=True, text=True, timeout=300, check=False, cwd=_repo())
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "hint_points.json").read_text())
    assert len(report["points"]) == 3 and report["metric"] == "cca" and report["samples"] == 200
    assert report["stage_ends"] == ["layer1.2", "layer2.2", "layer3.2"]
    assert (out / "hint_points.png").read_bytes()[:4] == b"\x89PNG"
    assert report["points"][0] in proc.stdout
    # It says it will train the reference, with the epochs, before the first epoch ...
    announced = proc.stderr.index(f"no {out / 'reference.pt'}: training one first, 1 epoch (training.reference.epochs)")
    assert announced < proc.stderr.index("FP32 reference epoch 1/1")
    # ... and --checkpoint takes existing FP32 weights instead: same points, nothing trained.
    again = subprocess.run([sys.executable, "-m", "nncf_lossless", "select-hints", "--config", "configs/digits_int8.json",
                            "--set", "model.name=resnet20", "--checkpoint", str(out / "reference.pt"),
                            "--output-dir", str(tmp_path / "again"), "--samples", "200", "--num-points", "3", "--metric", "cca"],
                           capture_output=True, text=True, timeout=300, check=False, cwd=_repo())
    assert again.returncode == 0, again.stderr
    assert "training one first" not in again.stderr and "FP32 reference epoch" not in again.stderr
    assert json.loads((tmp_path / "again" / "hint_points.json").read_text())["points"] == report["points"]
    bad = subprocess.run([sys.executable, "-m", "nncf_lossless", "select-hints", "--config", "configs/digits_int8.json",
                          "--set", "training.reference.epochs=1", "--output-dir", str(tmp_path / "bad"), "--num-points", "9"], capture_output=True, text=True, timeout=300,
                         check=False, cwd=_repo())
    assert bad.returncode == 2 and "num_points: 9" in bad.stderr and bad.stderr.strip().count("\n") == 0


def _repo():
    from conftest import REPO

    return REPO
