"""Flip repair on a real 4-bit digits IR pair: budgets hold, reports equal a fresh check, bad input is refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
import torch
from conftest import digits_config
from torch.utils.data import DataLoader

from nncf_lossless.checker.core import RT_NAMESPACE, load_samples, run_check
from nncf_lossless.checker.ov_runner import compile_ir, infer
from nncf_lossless.cli.main import main
from nncf_lossless.config import load_config
from nncf_lossless.errors import ConfigError
from nncf_lossless.repair.search import Evaluation, label_agreement, search
from nncf_lossless.repair.surgery import quantizer_groups, reference_weights, revert
from nncf_lossless.training.repair_step import check_repair_config


def _arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in DataLoader(dataset, batch_size=512)])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, _trained_reference, digits) -> dict[str, Path]:
    """A 4-bit PTQ digits IR pair (NNCF quantizers, our export) with validation (train images) and test npz."""
    from nncf_lossless.controller import create_compressed_model

    out = tmp_path_factory.mktemp("repair_pair")
    q4 = {"algorithm": "quantization", "subset_size": 128, "weights": {"bits": 4}, "activations": {"bits": 4}}
    torch.manual_seed(0)
    ctrl, _ = create_compressed_model(copy.deepcopy(_trained_reference), digits_config(compression=[q4]),
                                      calibration_data=DataLoader(digits.calibration, batch_size=64))
    paths = ctrl.export(out, metadata={"class_names": digits.class_names, "mean": digits.mean, "std": digits.std})
    np.savez(out / "val.npz", **dict(zip(("inputs", "labels"), _arrays(digits.calibration))))
    np.savez(out / "test.npz", **dict(zip(("inputs", "labels"), _arrays(digits.test))))
    return {**paths, "val": out / "val.npz", "test": out / "test.npz", "dir": out}


def _cli(pair: dict[str, Path], out: Path, *extra: str, budget: str = "0") -> int:
    return main(["repair", "--reference", str(pair["reference"]), "--compressed", str(pair["compressed"]),
                 "--data", str(pair["val"]), "--max-mismatches", budget, "--output-dir", str(out), *extra])


def _check(reference: Path, model: Path, data: Path) -> int:
    inputs, labels = load_samples(data)
    report = run_check(reference, [model], inputs, labels, devices=["CPU"], precisions=["f32"])
    return report["runs"][0]["mismatches"]


@pytest.mark.parametrize("budget", [0, 2])
def test_repaired_ir_meets_the_budget_and_its_report_equals_a_fresh_check(pair, tmp_path, budget):
    before = _check(pair["reference"], pair["compressed"], pair["val"])
    assert before > 2, "the 4-bit pair needs flips to repair"
    out = tmp_path / "repaired"
    assert _cli(pair, out, "--test", str(pair["test"]), budget=str(budget)) == 0
    report = json.loads((out / "repair.json").read_text())
    repaired = out / "repaired.xml"
    fresh_val = _check(pair["reference"], repaired, pair["val"])
    assert fresh_val <= budget
    assert report["validation"]["repaired"]["mismatches"] == fresh_val == report["search_validation_mismatches"]["after"]
    assert report["validation"]["compressed"]["mismatches"] == before
    assert report["test"]["repaired"]["mismatches"] == _check(pair["reference"], repaired, pair["test"])
    assert 0 < len(report["reverted_groups"]) < report["num_groups"] or budget == 0
    rt = ov.Core().read_model(repaired)
    assert json.loads(rt.get_rt_info([RT_NAMESPACE, "reverted_layers"]).astype(str)) == report["reverted_layers"]
    source = ov.Core().read_model(pair["compressed"])
    assert rt.get_rt_info([RT_NAMESPACE, "class_names"]).astype(str) == source.get_rt_info([RT_NAMESPACE, "class_names"]).astype(str)
    fq = sum(op.get_type_name() == "FakeQuantize" for op in rt.get_ops())
    assert fq == sum(len(g["quantizers"]) for g in report["groups"]) - sum(len(g["quantizers"]) for g in report["reverted_groups"])
    assert report["throughput"]["images_per_second"]["fp32_reference"] > 0
    assert (out / "repair.png").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["repair.json", "repair.png", "repaired.bin", "repaired.xml"]


def test_every_group_in_float_with_reference_weights_is_the_reference(pair):
    """Our removal keeps the ReLU OpenVINO fused into each unsigned FakeQuantize; NNCF's would drop it."""
    core = ov.Core()
    comp, ref = core.read_model(pair["compressed"]), core.read_model(pair["reference"])
    inputs, _ = load_samples(pair["val"])
    ref_logits = infer(compile_ir(ref, "CPU", "f32", core), inputs)
    groups = quantizer_groups(comp)
    assert len(groups) >= 3
    logits = infer(compile_ir(revert(comp, groups, reference_weights(comp, ref)), "CPU", "f32", core), inputs)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4)
    # Without the reference weights only the activations are float: close to, but not, the reference.
    activations_only = infer(compile_ir(revert(comp, groups, None), "CPU", "f32", core), inputs)
    assert 0 < np.abs(activations_only - ref_logits).max() < np.abs(ref_logits).max()


def test_search_reverts_the_fewest_groups_in_rank_order():
    # Group g, in float, fixes the samples fixes[g] of the four flips 0..3.
    fixes = {0: {0, 1, 2}, 1: {0, 1}, 2: {2, 3}}

    def evaluate(indices):
        fixed = set().union(*(fixes[g] for g in indices)) if indices else set()
        return Evaluation(tuple(sorted({0, 1, 2, 3} - fixed)), nmse=0.0)

    # Rank: 0 (1 flip left), then 1 and 2 (2 left each; the index breaks the tie).
    result = search(3, evaluate, 1)
    assert result.reverted == [0] and result.budget_met and result.after.mismatches == 1
    result = search(3, evaluate, 0)
    assert [s["reverted_groups"] for s in result.steps] == [[], [0], [0, 1], [0, 1, 2], [0, 2]]
    assert result.reverted == [0, 2] and result.pruned == [1] and result.after.mismatches == 0
    impossible = search(2, lambda idx: Evaluation((7,), 0.0), 0)
    assert not impossible.budget_met and impossible.reverted == [0, 1]


def test_label_agreement_follows_nncfs_per_sample_contract():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    metric, values = label_agreement(ref)(np.array([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1]]))
    assert values == [1.0, 0.0, 1.0] and metric == pytest.approx(2 / 3)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_negative_budget_is_refused_and_nothing_written(pair, tmp_path, capsys):
    out = tmp_path / "out"
    assert _cli(pair, out, budget="-1") == 2
    assert "--max-mismatches" in _one_line_error(capsys)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _classifier(path: Path, channels: int, classes: int) -> Path:
    x = ops.parameter([-1, channels, 8, 8], np.float32, name="x")
    flat = ops.reshape(x, ops.constant(np.array([-1, channels * 64], dtype=np.int64)), special_zero=False)
    logits = ops.matmul(flat, ops.constant(np.ones((channels * 64, classes), np.float32)), False, False)
    ov.save_model(ov.Model([logits], [x]), path)
    return path


@pytest.mark.parametrize(("channels", "classes", "message"), [(1, 5, "classes"), (3, 10, "input shape")])
def test_mismatched_irs_are_refused_and_nothing_written(pair, tmp_path, capsys, channels, classes, message):
    other = _classifier(tmp_path / "other.xml", channels, classes)
    out = tmp_path / "out"
    code = main(["repair", "--reference", str(other), "--compressed", str(pair["compressed"]), "--data", str(pair["val"]),
                 "--max-mismatches", "0", "--output-dir", str(out)])
    assert code == 2
    line = _one_line_error(capsys)
    assert message in line and "--compressed" in line
    assert not out.exists()


def test_data_that_does_not_fit_is_refused_and_nothing_written(pair, tmp_path, capsys):
    inputs, labels = load_samples(pair["val"])
    np.savez(tmp_path / "small.npz", inputs=inputs[:, :, :7, :7], labels=labels)
    out = tmp_path / "out"
    code = main(["repair", "--reference", str(pair["reference"]), "--compressed", str(pair["compressed"]),
                 "--data", str(tmp_path / "small.npz"), "--max-mismatches", "0", "--output-dir", str(out)])
    assert code == 2 and "[1, 7, 7]" in _one_line_error(capsys)
    assert _cli(pair, out, "--test", str(tmp_path / "small.npz")) == 2
    assert _one_line_error(capsys).startswith("error: --test:")
    np.savez(tmp_path / "bad.npz", inputs=inputs, labels=labels[:-1])
    assert main(["repair", "--reference", str(pair["reference"]), "--compressed", str(pair["compressed"]),
                 "--data", str(tmp_path / "bad.npz"), "--max-mismatches", "0", "--output-dir", str(out)]) == 2
    assert "--data" in _one_line_error(capsys)
    assert not out.exists()


def test_repair_config_section_is_validated_and_needs_a_validation_split(digits):
    config = load_config(digits_config(repair={"max_mismatches": 3}))
    assert config["repair"] == {"enabled": True, "max_mismatches": 3, "device": "CPU", "precision": "f32",
                                "restore_mode": "activations_and_weights", "dir": "repair"}
    assert "repair" not in load_config(digits_config())  # absent stays absent: cached configs are unchanged
    with pytest.raises(ConfigError, match=r"repair\.max_mismatches"):
        load_config(digits_config(repair={"max_mismatches": -1}))
    with pytest.raises(ConfigError, match="validation split"):
        check_repair_config(config, digits)
    check_repair_config(load_config(digits_config(repair={"enabled": False})), digits)


def test_ptq_path_nncf_accuracy_control_with_label_agreement(pair):
    from nncf_lossless.repair.ptq import quantize_with_label_control

    inputs, labels = load_samples(pair["val"])
    model = quantize_with_label_control(pair["reference"], inputs[:128], inputs[:400], max_mismatches=0, subset_size=128)
    path = pair["dir"] / "ptq.xml"
    ov.save_model(model, path, compress_to_fp16=False)
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    np.savez(pair["dir"] / "val400.npz", inputs=inputs[:400], labels=labels[:400])
    assert _check(pair["reference"], path, pair["dir"] / "val400.npz") == 0


def test_trainer_repair_step_repairs_the_exported_pair_on_the_validation_split(pair, digits, tmp_path):
    from types import SimpleNamespace

    from torch.utils.data import Subset

    from nncf_lossless.training.repair_step import repair_after_export

    config = load_config(digits_config(repair={"max_mismatches": 1}))
    # The validation split another branch adds to DataBundle; here: the first 600 training images.
    data = SimpleNamespace(validation=Subset(digits.calibration, range(600)), test=digits.test)
    check_repair_config(config, data)
    report = repair_after_export(config, data, {"reference": pair["reference"], "compressed": pair["compressed"]}, tmp_path)
    assert report["budget_met"] and report["validation"]["num_samples"] == 600
    assert report["validation"]["repaired"]["mismatches"] <= 1
    assert report["test"]["num_samples"] == len(digits.test)
    assert (tmp_path / "repair" / "repaired.xml").exists()


def test_an_unreachable_budget_writes_the_report_but_no_ir(pair, tmp_path, capsys):
    # Keeping the 4-bit weights, even every activation in float leaves flips on this pair.
    out = tmp_path / "out"
    assert _cli(pair, out, "--restore-mode", "only_activations", "--ranking-subset-size", "0") == 1
    report = json.loads((out / "repair.json").read_text())
    assert not report["budget_met"] and report["repaired"] is None
    assert len(report["reverted_groups"]) == report["num_groups"]
    assert report["search_validation_mismatches"]["after"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["repair.json", "repair.png"]
    assert "budget not met" in capsys.readouterr().err


def test_an_absent_device_or_a_file_as_output_dir_is_refused(pair, tmp_path, capsys):
    assert _cli(pair, tmp_path / "out", "--device", "NO_SUCH_DEVICE") == 2
    assert "--device: NO_SUCH_DEVICE" in _one_line_error(capsys)
    (tmp_path / "file").write_text("x")
    assert _cli(pair, tmp_path / "file") == 2
    assert "--output-dir" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_shared_memo_gives_the_same_repair_as_a_fresh_search(pair, tmp_path):
    from nncf_lossless.repair.run import repair

    validation = load_samples(pair["val"])
    memo: dict = {}
    repair(pair["reference"], pair["compressed"], validation, tmp_path / "b2", max_mismatches=2, memo=memo)
    size = len(memo)
    shared = repair(pair["reference"], pair["compressed"], validation, tmp_path / "b0", max_mismatches=0, memo=memo)
    fresh = repair(pair["reference"], pair["compressed"], validation, tmp_path / "fresh", max_mismatches=0)
    assert shared["reverted_groups"] == fresh["reverted_groups"] and shared["ranking"] == fresh["ranking"]
    assert shared["validation"]["repaired"]["mismatches"] == fresh["validation"]["repaired"]["mismatches"] == 0
    assert len(memo) >= size


def test_the_search_counts_with_one_stream_and_the_report_adds_the_throughput_pass(pair, tmp_path, monkeypatch):
    """THROUGHPUT streams are for timing: OpenVINO computed a 4-bit CIFAR-10 IR wrongly with two of them."""
    from nncf_lossless.repair import run

    hints = []

    def recording(*args, throughput=False, **kwargs):
        hints.append(throughput)
        return compile_ir(*args, throughput=throughput, **kwargs)

    monkeypatch.setattr(run, "compile_ir", recording)
    report = run.repair(pair["reference"], pair["compressed"], load_samples(pair["val"]), tmp_path / "out",
                        max_mismatches=2, throughput_samples=64)
    searched = len(hints) - 3  # measure_throughput compiles the reference, the compressed and the repaired IR
    assert searched > 3 and not any(hints[:searched]) and all(hints[searched:])
    inputs, labels = load_samples(pair["val"])
    fresh = run_check(pair["reference"], [pair["compressed"], tmp_path / "out" / "repaired.xml"], inputs, labels,
                      devices=["CPU"], precisions=["f32"])["runs"]
    for name, check in zip(("compressed", "repaired"), fresh):
        assert report["validation"][name]["throughput_mismatches"] == check["throughput"]["mismatches"]
        assert report["validation"][name]["throughput_labels_differ_from_one_stream"] == \
            check["throughput"]["labels_differ_from_one_stream"]
