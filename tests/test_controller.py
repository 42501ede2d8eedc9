"""The controller on real NNCF: QAT, low-bit QAT, pruning, prune-then-quantize, state round trips."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, digits_config
from nncf.torch.quantization.layers import BaseQuantizer
from torch import nn

from nncf_lossless import create_compressed_model
from nncf_lossless.algorithms.quantization.low_bit import quantizers
from nncf_lossless.checkpoint import load_checkpoint, save_checkpoint


def _config(*entries):
    return digits_config(compression=list(entries))


def _fine_tune(ctrl, model, loader, epochs=2, lr=1e-3):
    """A hand-written loop over the controller; returns the mean loss of each epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        ctrl.scheduler.epoch_step()
        losses.append(_fine_tune_epoch(ctrl, model, loader, optimizer))
    return losses


def _fine_tune_epoch(ctrl, model, loader, optimizer):
    model.train()
    total, n = 0.0, 0
    for x, y in loader:
        ctrl.scheduler.step()
        out = model(x)
        loss = F.cross_entropy(out, y) + ctrl.loss(out, y, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, n = total + loss.item() * len(y), n + len(y)
    return total / n


@torch.no_grad()
def _logits(model, dataset):
    model.eval()
    return model(torch.stack([dataset[i][0] for i in range(len(dataset))]))


def _undertrained(reference):
    """Pushes the reference off its optimum, so that fine-tuning has loss to remove."""
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return reference


def test_qat_inserts_nncf_quantizers_and_fine_tuning_reduces_loss(reference, calibration, train_loader):
    torch.manual_seed(0)
    ctrl, model = create_compressed_model(_undertrained(reference), _config({"algorithm": "quantization"}),
                                          calibration_data=calibration)
    assert sum(isinstance(m, BaseQuantizer) for m in model.modules()) >= 5
    assert ctrl.loss().item() == 0.0, "quantization adds no loss term"
    losses = _fine_tune(ctrl, model, train_loader, epochs=3)
    assert losses[-1] < losses[0]
    stats = ctrl.statistics()
    assert stats["epoch"] == 3 and stats["quantization"]["quantizers_by_bits"] == {"8": stats["quantization"]["num_quantizers"]}


def test_reference_is_a_frozen_copy(reference, calibration):
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    ctrl, model = create_compressed_model(reference, _config({"algorithm": "quantization"}), calibration_data=calibration)
    assert ctrl.reference is not model and not ctrl.reference.training
    assert all(not p.requires_grad for p in ctrl.reference.parameters())
    assert all(torch.equal(before[k], v) for k, v in ctrl.reference.state_dict().items())


@pytest.mark.parametrize("fix, expected", [("enable", "all"), ("first_layer_only", "first"), ("disable", "none")])
def test_overflow_fix_halves_the_range_of_the_weights_it_names(reference, calibration, fix, expected):
    """NNCF's half range: an 8-bit weight quantizer whose scale is twice its weights' max, so codes stay in 7 bits."""
    def halved(model, bits=8):
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]  # graph order here
        weights = [q for q, is_weight in quantizers(model, torch.ones(1, 1, 8, 8)).values() if is_weight]
        assert len(weights) == len(layers) >= 3
        ratios = [(q.scale.max() / layer.weight.abs().max()).item() for q, layer in zip(weights, layers)]
        assert bits < 8 or all(abs(r - 1) < 0.05 or abs(r - 2) < 0.1 for r in ratios), ratios
        return [r > 1.5 for r in ratios]

    entry = {"algorithm": "quantization", "overflow_fix": fix}
    _, model = create_compressed_model(copy.deepcopy(reference), _config(entry), calibration_data=calibration)
    n = len(halved(model))
    assert halved(model) == {"all": [True] * n, "first": [True] + [False] * (n - 1), "none": [False] * n}[expected]
    # Below 8 bits nothing can saturate: the option is ignored (NNCF refuses half range there).
    _, model4 = create_compressed_model(copy.deepcopy(reference), _config({**entry, "weights": {"bits": 4}}),
                                        calibration_data=calibration)
    assert not any(halved(model4, bits=4))


def test_four_bit_qat_sets_bits_and_reinitialised_ranges_beat_8bit_ranges(reference, calibration, digits):
    cfg8 = _config({"algorithm": "quantization"})
    cfg4 = _config({"algorithm": "quantization", "weights": {"bits": 4}, "activations": {"bits": 4}})
    _, model8 = create_compressed_model(copy.deepcopy(reference), cfg8, calibration_data=calibration)
    ctrl4, model4 = create_compressed_model(copy.deepcopy(reference), cfg4, calibration_data=calibration)
    assert ctrl4.statistics()["quantization"]["quantizers_by_bits"] == {"4": ctrl4.statistics()["quantization"]["num_quantizers"]}
    example = torch.ones(1, 1, 8, 8)
    found = quantizers(model4, example)
    assert any(w for _, w in found.values()) and any(not w for _, w in found.values())
    for q, is_weight in found.values():
        assert q.levels == (15 if is_weight else 16)  # narrow-range signed weights, unsigned activations
    # The same model with its 8-bit (min/max) ranges merely switched to 4 bits, no re-initialisation:
    naive = copy.deepcopy(model8)
    for m in naive.modules():
        if isinstance(m, BaseQuantizer):
            m.num_bits = 4
    ref = _logits(reference, digits.test)
    err_reinit = (_logits(model4, digits.test) - ref).pow(2).mean()
    err_naive = (_logits(naive, digits.test) - ref).pow(2).mean()
    assert err_reinit < err_naive


def test_output_mse_range_search_runs_on_8bit_activation_ranges_and_never_moves_away(reference, calibration, monkeypatch):
    from nncf_lossless.algorithms.quantization import low_bit

    searched_qs = []
    real = low_bit.search_ranges
    monkeypatch.setattr(low_bit, "search_ranges", lambda m, r, qs, x: (searched_qs.extend(qs), real(m, r, qs, x)))
    _, plain = create_compressed_model(copy.deepcopy(reference), _config({"algorithm": "quantization"}),
                                       calibration_data=calibration)
    assert searched_qs == []  # not asked for, not run
    cfg = _config({"algorithm": "quantization", "range_search": "output_mse"})
    _, searched = create_compressed_model(copy.deepcopy(reference), cfg, calibration_data=calibration)
    found = quantizers(searched, torch.ones(1, 1, 8, 8))
    assert [id(q) for q in searched_qs] == [id(q) for q, w in found.values() if not w]  # every activation, in order
    # Factor 1 is in every quantizer's grid: the output can only come closer to the reference's.
    x = torch.cat([xb for xb, _ in calibration])[:256]
    with torch.no_grad():
        target = reference.eval()(x)
        assert (searched.eval()(x) - target).pow(2).mean() <= (plain.eval()(x) - target).pow(2).mean()


def test_channel_mse_weight_ranges_lower_every_channels_4bit_weight_error(reference, calibration):
    from nncf_lossless.algorithms.quantization.quantizer_sites import quantizer_sites, weight_parameter

    def weight_errors(model):
        """Per weight quantizer, the squared quantization error of each output channel."""
        out = []
        with torch.no_grad():
            for site in quantizer_sites(model, torch.ones(1, 1, 8, 8)):
                if site.is_weight:
                    w = weight_parameter(model, site)
                    assert site.quantizer.num_bits == 4
                    out.append((site.quantizer(w) - w).pow(2).flatten(1).sum(1))
        return out

    entry = {"algorithm": "quantization", "weights": {"bits": 4}}
    _, searched = create_compressed_model(copy.deepcopy(reference), _config(entry), calibration_data=calibration)
    _, local = create_compressed_model(copy.deepcopy(reference), _config({**entry, "weight_range_search": "channel_mse"}),
                                       calibration_data=calibration)
    before, after = weight_errors(searched), weight_errors(local)
    assert len(before) == len(after) > 0
    # One shrink factor per quantizer cannot fit every channel; the per-channel search does at least as well on each.
    for b, a in zip(before, after):
        assert torch.all(a <= b + 1e-6)
    assert sum(a.sum() for a in after) < 0.9 * sum(b.sum() for b in before)
    scales = [site.quantizer.scale.flatten() for site in quantizer_sites(local, torch.ones(1, 1, 8, 8)) if site.is_weight]
    assert any(len(s) > 1 for s in scales)


@pytest.mark.parametrize("mode", ["UNSTRUCTURED_MAGNITUDE_LOCAL", "UNSTRUCTURED_MAGNITUDE_GLOBAL"])
def test_magnitude_pruning_follows_the_multistep_schedule(reference, calibration, train_loader, mode):
    entry = {"algorithm": "pruning", "mode": mode, "ratio": 0.6,
             "schedule": {"type": "multistep", "steps": {"0": 0.3, "1": 0.6}}}
    ctrl, model = create_compressed_model(_undertrained(reference), _config(entry), calibration_data=calibration)
    ratios = []
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        ctrl.scheduler.epoch_step()
        ratios.append(round(ctrl.statistics()["pruning"]["pruned_ratio"], 2))
        losses.append(_fine_tune_epoch(ctrl, model, train_loader, optimizer))
    assert ratios == [0.3, 0.6, 0.6]
    assert losses[-1] < losses[0]


def test_regularization_based_pruning_adds_nncf_rb_loss(reference, calibration, train_loader):
    entry = {"algorithm": "pruning", "mode": "UNSTRUCTURED_REGULARIZATION_BASED", "ratio": 0.5}
    ctrl, model = create_compressed_model(reference, _config(entry), calibration_data=calibration)
    # NNCF's RBLoss: ((kept fraction - (1 - target)) / p)^2 = ((1 - 0.5) / 0.05)^2 with every weight kept.
    assert ctrl.loss(torch.zeros(1)).item() == pytest.approx(100.0)
    masks = [p for n, p in model.named_parameters() if n.endswith(".mask")]
    assert masks, "RB pruning trains its masks as parameters of the model"
    # Masks start at logit(0.99); a high mask learning rate lets a short test see them cross zero.
    weights = [p for n, p in model.named_parameters() if not n.endswith(".mask")]
    optimizer = torch.optim.Adam([{"params": weights, "lr": 1e-3}, {"params": masks, "lr": 0.5}])
    ctrl.scheduler.epoch_step()
    _fine_tune_epoch(ctrl, model, train_loader, optimizer)
    assert ctrl.loss(torch.zeros(1)).item() < 100.0
    assert ctrl.statistics()["pruning"]["pruned_ratio"] > 0


def test_batch_norm_adaptation_changes_running_stats_after_pruning(reference, calibration):
    entry = {"algorithm": "pruning", "ratio": 0.7}
    _, plain = create_compressed_model(copy.deepcopy(reference), _config(entry), calibration_data=calibration)
    entry_bn = {**entry, "batch_norm_adaptation": {"enabled": True}}
    _, adapted = create_compressed_model(copy.deepcopy(reference), _config(entry_bn), calibration_data=calibration)
    bn_plain = [m.running_mean for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    bn_adapted = [m.running_mean for m in adapted.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not all(torch.equal(a, b) for a, b in zip(bn_plain, bn_adapted))


def test_prune_then_quantize_in_one_config(reference, calibration, train_loader, digits):
    # Listed quantization first on purpose: entries are applied in their stage order, pruning first.
    cfg = _config({"algorithm": "quantization"}, {"algorithm": "pruning", "ratio": 0.5})
    ctrl, model = create_compressed_model(_undertrained(reference), cfg, calibration_data=calibration)
    assert [a.name for a in ctrl.algorithms] == ["pruning", "quantization"]
    losses = _fine_tune(ctrl, model, train_loader, epochs=2)
    assert losses[-1] < losses[0]
    stats = ctrl.statistics()
    assert stats["pruning"]["pruned_ratio"] == pytest.approx(0.5, abs=0.01)
    assert stats["quantization"]["num_quantizers"] >= 5


@pytest.mark.parametrize("entries", [
    [{"algorithm": "quantization", "weights": {"bits": 4}, "activations": {"bits": 4}}],
    [{"algorithm": "pruning", "ratio": 0.4, "schedule": {"type": "exponential", "initial_ratio": 0.1, "target_epoch": 3}},
     {"algorithm": "quantization"}],
    [{"algorithm": "pruning", "mode": "UNSTRUCTURED_REGULARIZATION_BASED",
      "schedule": {"type": "multistep", "steps": {"0": 0.2, "1": 0.4}}}],
], ids=["int4", "exp-pruning+int8", "rb-multistep"])
def test_state_dict_round_trip_restores_outputs_and_schedules(tmp_path, reference, calibration, train_loader, digits, entries):
    cfg = _config(*entries)
    ctrl, model = create_compressed_model(copy.deepcopy(reference), cfg, calibration_data=calibration)
    _fine_tune(ctrl, model, train_loader, epochs=2)
    save_checkpoint(ctrl.state_dict(), tmp_path / "ctrl.pt")
    state = load_checkpoint(tmp_path / "ctrl.pt")  # weights_only=True
    ctrl2, model2 = create_compressed_model(copy.deepcopy(reference), cfg, compression_state=state)
    assert torch.equal(_logits(model, digits.test), _logits(model2, digits.test))
    assert ctrl2.statistics() == ctrl.statistics()
    # One more epoch on both continues identically: the schedules resumed where they were.
    ctrl.scheduler.epoch_step()
    ctrl2.scheduler.epoch_step()
    assert ctrl2.statistics() == ctrl.statistics()


def test_sequential_models_are_wrapped_for_nncf(calibration):
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    _ctrl, model = create_compressed_model(seq, _config({"algorithm": "quantization"}), calibration_data=calibration)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_quantization_without_calibration_data_is_a_config_error(reference):
    from nncf_lossless.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^compression\[0\]\.algorithm: quantization needs calibration_data$"):
        create_compressed_model(reference, _config({"algorithm": "quantization"}))


def test_quantizer_parameters_nncf_cannot_place_are_a_one_line_config_error(reference, calibration):
    from nncf_lossless.errors import ConfigError

    entry = {"algorithm": "quantization", "activations": {"per_channel": True}}
    with pytest.raises(ConfigError, match=r"weights/activations: NNCF's hardware config for target_device ANY .*"
                                          r"first conflict at \S+") as err:
        create_compressed_model(reference, _config(entry), calibration_data=calibration)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("train_ranges", [True, False])
def test_train_ranges_false_keeps_every_quantizer_range_while_the_weights_train(reference, calibration, train_loader,
                                                                               train_ranges):
    from nncf.torch.quantization.layers import BaseQuantizer

    entry = {"algorithm": "quantization", "subset_size": 64, "train_ranges": train_ranges}
    ctrl, model = create_compressed_model(reference, _config(entry), calibration_data=calibration)
    quantizers = [m for m in model.modules() if isinstance(m, BaseQuantizer)]
    ranges = [[p.detach().clone() for p in q.parameters() if p.is_floating_point()] for q in quantizers]
    weights = [p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")]
    _fine_tune(ctrl, model, train_loader, epochs=1, lr=1e-2)
    moved = [not torch.equal(a, b) for q, before in zip(quantizers, ranges)
             for a, b in zip([p for p in q.parameters() if p.is_floating_point()], before)]
    assert len(moved) >= len(quantizers) > 0
    assert any(moved) == train_ranges
    weights_after = [p for n, p in model.named_parameters() if n.endswith("weight")]
    assert any(not torch.equal(a, b) for a, b in zip(weights, weights_after))  # the weights trained either way


def test_full_bias_correction_which_nncf_torch_lacks_is_a_one_line_config_error(reference, calibration):
    from nncf_lossless.errors import ConfigError

    entry = {"algorithm": "quantization", "fast_bias_correction": False}
    with pytest.raises(ConfigError, match=r"^compression\[0\]\.fast_bias_correction: NNCF 3\.\S+ quantizes PyTorch models only with "
                                          r"fast bias correction; set it to true$"):
        create_compressed_model(reference, _config(entry), calibration_data=calibration)


def test_unknown_ignored_scope_name_is_a_one_line_config_error(reference, calibration):
    from nncf_lossless.errors import ConfigError

    entry = {"algorithm": "quantization", "ignored_scope": {"names": ["no/such/node"]}}
    with pytest.raises(ConfigError, match=r"^compression\[0\]\.ignored_scope: .*no/such/node") as err:
        create_compressed_model(reference, _config(entry), calibration_data=calibration)
    assert "\n" not in str(err.value)


SHIPPED = sorted(p for p in (REPO / "configs").iterdir() if p.suffix in (".json", ".yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_builds_its_compressed_model(path):
    """The model and compression of each shipped config, on synthetic inputs of its input_info shape."""
    from nncf_lossless.config import load_config
    from nncf_lossless.models import build_model

    config = load_config(path)
    for entry in config["compression"]:
        if entry.get("weights") == "auto":  # a real run resolves it first (nncf_lossless.training.tuning.tune)
            entry["weights"] = {}
        if entry["algorithm"] == "multi_bit":  # its range search re-runs the model per factor and quantizer
            entry["range_search_samples"] = 2
            entry["bits"] = [max(entry["bits"]), min(entry["bits"])]
    shape = config["input_info"]["sample_size"]
    torch.manual_seed(0)
    model = build_model(config["model"], num_classes=10, in_channels=shape[1]).eval()
    calibration = [torch.randn(8, *shape[1:]) for _ in range(2)]
    ctrl, compressed = create_compressed_model(model, config, calibration_data=calibration,
                                               epochs=config["training"]["epochs"], steps_per_epoch=len(calibration))
    assert sorted(a.name for a in ctrl.algorithms) == sorted(e["algorithm"] for e in config["compression"])
    assert compressed(torch.randn(2, *shape[1:])).shape == (2, 10)
