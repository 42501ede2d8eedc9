"""label_preserving_distillation: loss terms, schemes, teacher mode, cache, auto weights (digits, real NNCF)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import digits_config
from torch.utils.data import DataLoader

from nncf_lossless import create_compressed_model
from nncf_lossless.algorithms.distillation import losses as L
from nncf_lossless.config import load_config
from nncf_lossless.errors import ConfigError
from nncf_lossless.training.loop import fit_epoch, make_lr_schedule, make_optimizer
from nncf_lossless.training.trainer import run

T = 3.0
STUDENT_TERMS = {
    "kd": lambda s, t: L.kd(s, t, T),
    "teacher_ce": L.teacher_ce,
    "margin": lambda s, t: L.margin(s, t, 2.0),
    "mse": L.logit_mse,
}


def _config(scheme="C", **distill):
    entry = {"algorithm": "label_preserving_distillation", "scheme": scheme, **distill}
    return {"input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": [{"algorithm": "quantization", "subset_size": 128}, entry]}


@pytest.mark.parametrize("name", sorted(STUDENT_TERMS))
def test_each_term_is_zero_at_the_teacher_and_descends_towards_it(name):
    torch.manual_seed(0)
    teacher = torch.randn(32, 10) * 3
    term = STUDENT_TERMS[name]
    at_teacher = teacher.clone().requires_grad_(True)
    value = term(at_teacher, teacher)
    if name == "teacher_ce":  # CE against a hard label is minimal, not zero, at the teacher's logits
        value.backward()
        assert value.item() > 0
        assert at_teacher.grad.abs().max().item() < 0.5
    else:
        assert value.item() == pytest.approx(0.0, abs=1e-6)
    # Away from the teacher (its top-1 logit pushed down), the gradient on that logit must be negative:
    # descending raises the student's score of the teacher's class.
    student = teacher.clone()
    top1 = teacher.argmax(1)
    student[torch.arange(32), top1] -= 6.0
    student.requires_grad_(True)
    value = term(student, teacher)
    value.backward()
    assert value.item() > 0
    assert (student.grad[torch.arange(32), top1] < 0).all()


def test_label_ce_gradient_raises_the_true_class():
    logits = torch.zeros(4, 10, requires_grad=True)
    y = torch.tensor([1, 2, 3, 4])
    L.label_ce(logits, y).backward()
    assert (logits.grad[torch.arange(4), y] < 0).all()


def _train_steps(ctrl, model, loader, steps=3):
    optimizer = make_optimizer(ctrl.trainable_parameters(), {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0})
    model.train()
    for i, (x, y) in enumerate(loader):
        if i == steps:
            break
        out = model(x)
        loss = ctrl.loss(out, y, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("scheme", ["A", "B", "C"])
def test_only_scheme_a_moves_the_teacher_and_the_teacher_never_trains(scheme, reference, calibration, train_loader):
    ctrl, model = create_compressed_model(reference, _config(scheme, weights={"kd": 0.5, "label_ce": 0.5}),
                                          calibration_data=calibration)
    assert ctrl.owns_task_loss
    teacher = ctrl.reference
    modes = []
    original_train = teacher.train
    teacher.train = lambda mode=True: (modes.append(mode), original_train(mode))[1]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    _train_steps(ctrl, model, train_loader)
    assert not teacher.training and True not in modes
    changed = [k for k, v in teacher.state_dict().items() if not torch.equal(v, before[k])]
    if scheme == "A":
        assert any(k.endswith("weight") for k in changed)
        # Eval mode: the teacher's BatchNorm statistics stay where they were.
        assert not [k for k in changed if "running" in k]
        assert "teacher" in ctrl.statistics()["label_preserving_distillation"]["terms"]
    else:
        assert changed == []
    stats = ctrl.statistics()["label_preserving_distillation"]["terms"]
    assert set(stats) == {"label_ce", "kd", "total"} | ({"teacher"} if scheme == "A" else set())


def test_scheme_b_restarts_the_student_from_fresh_weights(reference, calibration):
    conv = next(m for m in reference.modules() if isinstance(m, torch.nn.Conv2d))
    trained = conv.weight.detach().clone()
    ctrl, model = create_compressed_model(reference, _config("B"), calibration_data=calibration)
    student_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    teacher_conv = next(m for m in ctrl.reference.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.equal(teacher_conv.weight, trained)
    assert not torch.allclose(student_conv.weight, trained)


def test_teacher_cache_hits_on_the_second_pass_and_gives_the_same_loss(reference, calibration, digits):
    ctrl, model = create_compressed_model(reference, _config(teacher_cache=True, weights={"kd": 1.0, "mse": 1.0}),
                                          calibration_data=calibration)
    model.eval()
    loader = DataLoader(digits.calibration, batch_size=64)
    first = [ctrl.loss(model(x), y, x).item() for x, y in loader]
    second = [ctrl.loss(model(x), y, x).item() for x, y in loader]
    assert first == pytest.approx(second, rel=1e-5)
    cache = ctrl.statistics()["label_preserving_distillation"]["teacher_cache"]
    assert cache["entries"] == len(digits.calibration) and cache["hit_rate"] == pytest.approx(0.5)


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match=r"compression\[1\]\.teacher_cache: .*scheme 'A'"):
        load_config(_config("A", teacher_cache=True))
    with pytest.raises(ConfigError, match=r"compression\[1\]\.weights: every student term"):
        load_config(_config(weights={"label_ce": 0, "kd": 0}))
    with pytest.raises(ConfigError, match=r"compression\[1\]\.scheme"):
        load_config(_config("D"))


def test_custom_loop_without_distillation_still_adds_its_own_ce(reference, calibration, train_loader):
    ctrl, model = create_compressed_model(reference, digits_config()["compression"] and
                                          {"input_info": {"sample_size": [1, 1, 8, 8]},
                                           "compression": [{"algorithm": "quantization", "subset_size": 128}]},
                                          calibration_data=calibration)
    assert not ctrl.owns_task_loss
    optimizer = make_optimizer(ctrl.trainable_parameters(), {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0})
    loss = fit_epoch(model, train_loader, optimizer, make_lr_schedule(optimizer, {"lr_schedule": "constant"}, 1), ctrl,
                     __import__("rich.console").console.Console(quiet=True), "epoch")
    assert 0 < loss < 1.0


def test_auto_weights_tune_a_tiny_budget_end_to_end(tmp_path):
    pytest.importorskip("optuna")
    config = digits_config(
        training={"seed": 0, "epochs": 1, "batch_size": 64, "lr": 1e-3, "reference": {"epochs": 2, "lr": 3e-3}},
        export={"enabled": False}, dataset={"name": "digits", "max_train_samples": 400, "max_test_samples": 100},
        compression=[{"algorithm": "quantization", "subset_size": 64},
                     {"algorithm": "label_preserving_distillation", "weights": "auto", "teacher_cache": True,
                      "auto": {"trials": 2, "epochs_per_trial": 1, "validation_fraction": 0.2, "train_samples": 128}}],
    )
    results = run(config, tmp_path)
    trail = json.loads((tmp_path / "tuning.json").read_text())
    assert len(trail["trials"]) == 2 and trail["best"]["number"] in (0, 1)
    assert all({"kd", "teacher_ce", "margin", "mse", "label_ce", "temperature"} <= set(t["params"]) for t in trail["trials"])
    assert trail["validation_samples"] == int(0.2 * 400) and trail["train_samples"] == 128
    used = results["statistics"]["label_preserving_distillation"]
    best = trail["best"]["params"]
    assert used["temperature"] == best["temperature"] and used["weights"]["kd"] == best["kd"]
    assert {"mismatches", "mismatches_reference_correct", "flip_matrix"} <= set(results)
