"""The controller as NNCF 2 users call it: ``ctrl.loss()`` without arguments for every registered entry,
``ctrl.strip()``, ``ctrl.compression_stage()``, ``ctrl.scheduler.epoch_step(epoch)`` / ``step(step)``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import digits_config
from nncf.torch.quantization.layers import BaseQuantizer

from nncf_lossless import create_compressed_model, registry
from nncf_lossless.algorithm import CompressionStage

# One small case per registered entry; a newly registered entry must add one (see the test below).
CASES = {
    "quantization": {"algorithm": "quantization", "subset_size": 64},
    "pruning": {"algorithm": "pruning", "mode": "UNSTRUCTURED_REGULARIZATION_BASED", "ratio": 0.5},
    "frozen_bn": {"algorithm": "frozen_bn", "at_epoch": 0},
    "label_preserving_distillation": {"algorithm": "label_preserving_distillation"},
    "hint_distillation": {"algorithm": "hint_distillation", "hint_points": ["features.1", "features.3"]},
    "multi_bit": {"algorithm": "multi_bit", "bits": [8, 4], "range_search_samples": 32},
}
# Entries whose ctrl.loss() must be a trainable, positive term after a forward.
ADDS_LOSS = {"pruning", "label_preserving_distillation", "hint_distillation", "multi_bit"}


def test_every_registered_entry_has_a_loss_case():
    assert set(registry.known()) <= set(CASES), f"add a case for {sorted(set(registry.known()) - set(CASES))}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_without_arguments_uses_the_last_forward(name, reference, calibration, train_loader):
    ctrl, model = create_compressed_model(reference, digits_config(compression=[CASES[name]]), calibration_data=calibration)
    before = ctrl.loss()  # before any forward: no error, a zero (or RB's mask-only) term
    assert before.dim() == 0 and torch.isfinite(before)
    model.train()
    ctrl.scheduler.epoch_step()
    x, y = next(iter(train_loader))
    ctrl.scheduler.step()
    out = model(x)
    extra = ctrl.loss()
    assert extra.dim() == 0 and torch.isfinite(extra)
    if name in ADDS_LOSS:
        assert extra.item() > 0 and extra.requires_grad
    (F.cross_entropy(out, y) + extra).backward()  # NNCF 2's loop
    assert any(p.grad is not None for p in model.parameters())


def test_loss_without_arguments_equals_the_explicit_call_for_distillation(reference, calibration, train_loader):
    entry = {"algorithm": "label_preserving_distillation", "weights": {"label_ce": 0.0, "kd": 1.0}}
    ctrl, model = create_compressed_model(reference, digits_config(compression=[entry]), calibration_data=calibration)
    model.eval()
    x, y = next(iter(train_loader))
    out = model(x)
    assert torch.allclose(ctrl.loss(), ctrl.loss(out, y, x))


def test_distillation_leaves_the_label_terms_out_without_targets(reference, calibration, train_loader):
    entry = {"algorithm": "label_preserving_distillation", "weights": {"label_ce": 1.0, "kd": 0.0, "mse": 1.0}}
    ctrl, model = create_compressed_model(reference, digits_config(compression=[entry]), calibration_data=calibration)
    model.eval()
    x, y = next(iter(train_loader))
    out = model(x)
    without, with_targets = ctrl.loss().item(), ctrl.loss(out, y, x).item()
    assert without == pytest.approx(F.mse_loss(out, ctrl.reference(x)).item(), rel=1e-5)
    assert with_targets == pytest.approx(without + F.cross_entropy(out, y).item(), rel=1e-5)


def test_strip_gives_an_eval_model_without_nncf_quantizers_that_answers_alike(reference, calibration, digits):
    ctrl, model = create_compressed_model(reference, digits_config(compression=[CASES["quantization"]]),
                                          calibration_data=calibration)
    model.train()
    x, y = next(iter(calibration))
    F.cross_entropy(model(x), y).backward()  # a training step's outputs are recorded, graph and all
    stripped = ctrl.strip()
    assert stripped is not model and not stripped.training and model.training, "the training model is left alone"
    assert not any(isinstance(m, BaseQuantizer) for m in stripped.modules())
    x = torch.stack([digits.test[i][0] for i in range(len(digits.test))])
    model.eval()
    with torch.no_grad():
        agree = (stripped(x).argmax(1) == model(x).argmax(1)).float().mean().item()
    assert agree >= 0.99


def test_compression_stage_follows_the_pruning_schedule_and_the_bn_freeze(reference, calibration):
    pruning = {"algorithm": "pruning", "ratio": 0.6,
               "schedule": {"type": "multistep", "steps": {"0": 0.0, "1": 0.3, "2": 0.6}}}
    ctrl, _ = create_compressed_model(reference, digits_config(compression=[pruning, {"algorithm": "frozen_bn", "at_epoch": 1}]),
                                      calibration_data=calibration)
    seen = []
    for _ in range(3):
        ctrl.scheduler.epoch_step()
        seen.append(ctrl.compression_stage())
    # epoch 0: ratio 0, BN free; epoch 1: ratio 0.3, BN frozen; epoch 2: the target ratio, BN frozen.
    assert seen == [CompressionStage.UNCOMPRESSED, CompressionStage.PARTIALLY_COMPRESSED, CompressionStage.FULLY_COMPRESSED]


def test_quantization_alone_is_fully_compressed(reference, calibration):
    ctrl, _ = create_compressed_model(reference, digits_config(compression=[CASES["quantization"]]), calibration_data=calibration)
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED


def test_scheduler_accepts_nncf2_indices_and_fast_forwards(reference, calibration):
    pruning = {"algorithm": "pruning", "ratio": 0.6, "schedule": {"type": "multistep", "steps": {"0": 0.1, "3": 0.6}}}
    config = digits_config(compression=[pruning, {"algorithm": "frozen_bn", "at_step": 5}])
    ctrl, _ = create_compressed_model(reference, config, calibration_data=calibration)
    ctrl.scheduler.epoch_step(0)
    ctrl.scheduler.epoch_step(None)
    assert ctrl.scheduler.epoch == 2
    ctrl.scheduler.epoch_step(3)  # skips nothing it must not: epoch 2 and 3 both start
    assert ctrl.scheduler.epoch == 4 and ctrl.statistics()["pruning"]["scheduled_ratio"] == 0.6
    assert ctrl.statistics()["pruning"]["pruned_ratio"] == pytest.approx(0.6, abs=0.02)
    ctrl.scheduler.step(0)
    assert not ctrl.statistics()["frozen_bn"]["frozen"]
    ctrl.scheduler.step(7)
    assert ctrl.scheduler.current_step == 8 and ctrl.statistics()["frozen_bn"]["frozen_at_step"] == 5
    with pytest.raises(ValueError, match=r"epoch_step\(1\): index 3 has already started"):
        ctrl.scheduler.epoch_step(1)
