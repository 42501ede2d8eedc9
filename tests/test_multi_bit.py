"""multi_bit on digits: switchable bit-widths, one IR per bit-width that agrees with its PyTorch model, exact resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import digits_config
from nncf.torch.quantization.layers import BaseQuantizer
from test_export import _assert_ir_agrees, _fake_quantize_levels

from nncf_lossless import create_compressed_model
from nncf_lossless.algorithms.multi_bit.losses import FP32, select_teacher
from nncf_lossless.algorithms.multi_bit.schedulers import MultiBitSchedule
from nncf_lossless.checkpoint import load_checkpoint, save_checkpoint
from nncf_lossless.errors import ConfigError
from nncf_lossless.training.trainer import CHECKPOINT, run

# Two bit-widths keep the range search (the costly part of compressing) to one.
ENTRY = {"algorithm": "multi_bit", "bits": [8, 4], "subset_size": 128, "range_search_samples": 64}


@pytest.fixture(scope="module")
def compressed(_trained_reference, digits):
    from torch.utils.data import DataLoader

    cfg = digits_config(compression=[ENTRY])
    ctrl, model = create_compressed_model(copy.deepcopy(_trained_reference), cfg,
                                          calibration_data=DataLoader(digits.calibration, batch_size=64),
                                          epochs=1, steps_per_epoch=10)
    return ctrl, model


def _quantizers(model):
    return [m for m in model.modules() if isinstance(m, BaseQuantizer)]


def test_set_bits_switches_levels_ranges_and_bn_statistics(compressed, digits):
    ctrl, model = compressed
    assert ctrl.bit_widths == [8, 4] and ctrl.active_bits == 8
    x = torch.stack([digits.test[i][0] for i in range(64)])
    model.eval()
    eight = {id(q): (q.levels, q._parameters["_scale_param_storage"]) for q in _quantizers(model)}
    bn = model.features[0][1]
    stats8 = bn.running_var
    out8 = model(x)
    ctrl.set_bits(4)
    try:
        assert {q.levels for q in _quantizers(model)} <= {15, 16} and {lv for lv, _ in eight.values()} <= {255, 256}
        # Per-bit ranges: other tensors, and the 4-bit search moved them away from the 8-bit calibration.
        assert all(q._parameters["_scale_param_storage"] is not eight[id(q)][1] for q in _quantizers(model))
        assert any(not torch.equal(q.scale, eight[id(q)][1]) for q in _quantizers(model))
        assert bn.running_var is not stats8
        assert not torch.equal(model(x), out8)
    finally:
        ctrl.set_bits(8)
    assert torch.equal(model(x), out8)
    with pytest.raises(ConfigError, match="^set_bits: 3 is not one of"):
        ctrl.set_bits(3)


def test_each_bit_width_exports_its_own_ir_that_agrees_with_pytorch(compressed, digits, tmp_path):
    ctrl, model = compressed
    paths = ctrl.export(tmp_path / "ir")
    assert sorted(p.name for p in (tmp_path / "ir").glob("*.xml")) == ["compressed_w4.xml", "compressed_w8.xml", "reference.xml"]
    assert paths["compressed"] == paths["compressed_w8"] and ctrl.active_bits == 8
    assert _fake_quantize_levels(paths["compressed_w8"]) == [256]
    assert _fake_quantize_levels(paths["compressed_w4"]) == [16]
    inputs = torch.stack([digits.test[i][0] for i in range(len(digits.test))])
    for bits in (8, 4):
        ctrl.set_bits(bits)
        try:
            _assert_ir_agrees(model, paths[f"compressed_w{bits}"], inputs)
        finally:
            ctrl.set_bits(8)


def test_state_dict_carries_every_bit_width_through_weights_only_load(compressed, digits, tmp_path, _trained_reference):
    ctrl, model = compressed
    ctrl.set_bits(4)  # saved while 4 bits are live: the restore must still put every bank where it belongs
    try:
        save_checkpoint({"ctrl": ctrl.state_dict()}, tmp_path / "c.pt")
    finally:
        ctrl.set_bits(8)
    state = torch.load(tmp_path / "c.pt", weights_only=True)["ctrl"]
    ctrl2, model2 = create_compressed_model(copy.deepcopy(_trained_reference), digits_config(compression=[ENTRY]),
                                            compression_state=state)
    x = torch.stack([digits.test[i][0] for i in range(64)])
    model.eval(), model2.eval()
    for bits in (8, 4):
        ctrl.set_bits(bits), ctrl2.set_bits(bits)
        assert torch.equal(model(x), model2(x)), bits
    ctrl.set_bits(8), ctrl2.set_bits(8)


def test_a_training_step_trains_every_bit_width_and_leaves_the_highest_live(compressed, train_loader):
    ctrl, model = compressed
    ctrl = copy.deepcopy(ctrl)  # the module fixture stays untouched
    model = ctrl.model
    banks = ctrl.algorithms[0].banks
    before = {b: [p.detach().clone() for slots in bank.params.values() for p in slots.values()] for b, bank in banks.banks.items()}
    optimizer = torch.optim.Adam(ctrl.trainable_parameters(), lr=1e-2)
    assert len({id(p) for p in ctrl.trainable_parameters()}) == len(ctrl.trainable_parameters())
    model.train()
    x, y = next(iter(train_loader))
    ctrl.scheduler.step()
    loss = ctrl.loss(model(x), y, x)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert ctrl.active_bits == 8
    for b, bank in banks.banks.items():
        after = [p for slots in bank.params.values() for p in slots.values()]
        assert any(not torch.equal(p, q) for p, q in zip(after, before[b])), f"{b}-bit ranges/BN did not train"
    stats = ctrl.statistics()["multi_bit"]
    assert set(stats["terms"]) >= {"8", "4"} and sum(stats["teachers_this_epoch"]["4"].values()) == pytest.approx(1)


def test_adaptive_teacher_is_the_nearest_higher_bit_width_that_keeps_the_reference_label():
    reference = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])
    w8 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    w6 = torch.tensor([[0.5, 0.0], [0.0, 0.5], [0.0, 0.5]])
    teacher, chosen = select_teacher("adaptive", {8: w8, 6: w6}, reference)
    assert chosen.tolist() == [6, 8, FP32]
    assert torch.equal(teacher, torch.stack([w6[0], w8[1], reference[2]]))
    assert select_teacher("reference", {8: w8}, reference)[1].tolist() == [FP32] * 3


def test_schedule_is_a_function_of_the_step_and_swapping_decays_to_zero():
    s = MultiBitSchedule([8, 6, 4, 2], 3, ["a", "b", "c", "d"], 0.5, 0.5, 100, seed=1)
    assert s.plan(7) == s.plan(7)
    plans = [s.plan(i) for i in range(40)]
    assert all(p.bits[0] == 8 and p.bits[-1] == 2 and len(p.bits) == 3 for p in plans)
    assert {p.bits[1] for p in plans} == {6, 4}
    assert s.probability(0) == 0.5 and s.probability(50) == 0.0 and s.plan(60).swapped == {b: [] for b in s.plan(60).bits[1:]}


def test_multi_bit_refuses_a_quantization_entry_beside_it(_trained_reference, calibration):
    cfg = digits_config(compression=[{"algorithm": "quantization"}, ENTRY])
    with pytest.raises(ConfigError, match=r"^compression\[1\]\.algorithm: multi_bit quantizes the model itself"):
        create_compressed_model(copy.deepcopy(_trained_reference), cfg, calibration_data=calibration)


def test_trainer_resumes_bit_identically_and_reports_every_bit_width_on_the_irs(tmp_path, _trained_reference):
    save_checkpoint({"state_dict": _trained_reference.state_dict()}, tmp_path / "reference.pt")
    entries = [ENTRY, {"algorithm": "label_preserving_distillation"}, {"algorithm": "frozen_bn", "at_epoch": 1}]
    config = digits_config(model={"name": "digits_cnn", "checkpoint": str(tmp_path / "reference.pt")}, compression=entries,
                           dataset={"name": "digits", "max_train_samples": 256},
                           training={"seed": 0, "epochs": 2, "batch_size": 64, "lr": 1e-3})
    straight = run(config, tmp_path / "straight")
    assert run(config, tmp_path / "stopped", stop_after_epoch=1)["stopped_after_epoch"] == 1
    run(config, tmp_path / "stopped", resume=True)
    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT)["ctrl"]
    b = load_checkpoint(tmp_path / "stopped" / CHECKPOINT)["ctrl"]
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    banks_a, banks_b = a["algorithms"]["multi_bit"]["banks"], b["algorithms"]["multi_bit"]["banks"]
    for bits in ("8", "4"):
        for kind in ("params", "buffers"):
            for unit, slots in banks_a[bits][kind].items():
                assert all(torch.equal(t, banks_b[bits][kind][unit][k]) for k, t in slots.items()), (bits, unit)
    assert straight["statistics"]["frozen_bn"]["frozen"]
    assert set(straight["by_bits"]) == {"8", "4"} and straight["by_bits"]["8"]["mismatches"] == straight["mismatches"]
    for bits in ("8", "4"):
        ir = straight["openvino"]["by_bits"][bits]
        assert ir["compressed_ir"].endswith(f"compressed_w{bits}.xml")
        assert {r["requested_precision"] for r in ir["runs"]} == {"f32", "default"}
        assert "openvino CPU f32" in straight["by_bits"][bits]["mismatches_by_side"]
    assert json.loads((tmp_path / "straight" / "results.json").read_text())["by_bits"] == straight["by_bits"]
