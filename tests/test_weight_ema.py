"""training.ema_decay: the averaged weights are what a run scores, selects, checkpoints for export and resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import digits_config
from torch import nn
from torch.utils.data import DataLoader

from nncf_lossless.checker.ov_runner import compile_ir, infer
from nncf_lossless.checkpoint import load_checkpoint, save_checkpoint
from nncf_lossless.config import load_config
from nncf_lossless.errors import ConfigError
from nncf_lossless.training.loop import predict
from nncf_lossless.training.trainer import CHECKPOINT, load_compressed, run
from nncf_lossless.training.weight_ema import WeightEMA


def test_the_average_follows_the_ema_formula_and_swaps_in_and_out_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ema = WeightEMA(model, decay=0.8)
    expected = {k: v.detach().clone() for k, v in model.named_parameters()}
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        optimizer.step()
        ema.update()
        for k, v in model.named_parameters():
            expected[k] = 0.8 * expected[k] + 0.2 * v.detach()
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.swapped():
        for k, v in expected.items():
            torch.testing.assert_close(model.state_dict()[k], v)
        assert not torch.equal(model.state_dict()["0.weight"], raw["0.weight"])
        # Buffers stay the model's own: running statistics are averages already, and per rank under DDP.
        assert torch.equal(model.state_dict()["1.running_mean"], raw["1.running_mean"])
        assert model.state_dict()["1.num_batches_tracked"] == raw["1.num_batches_tracked"] == 5
    for k, v in raw.items():
        assert torch.equal(model.state_dict()[k], v), k
    restored = WeightEMA(model, decay=0.8)
    restored.load_state_dict(ema.state_dict())
    restored.copy_to_model()
    torch.testing.assert_close(model.state_dict()["0.weight"], expected["0.weight"])
    with pytest.raises(ValueError, match="another model"):
        WeightEMA(nn.Linear(2, 2), 0.5).load_state_dict(ema.state_dict())


@pytest.mark.parametrize("decay", [0, 1, 1.5])
def test_a_decay_outside_zero_one_is_a_one_line_config_error(decay):
    with pytest.raises(ConfigError, match="training.ema_decay"):
        load_config(digits_config(training={"ema_decay": decay}))


def test_a_run_ends_with_the_averages_and_resumes_them_bit_identically(tmp_path, reference_checkpoint):
    cfg = digits_config(model={"name": "digits_cnn", "checkpoint": str(reference_checkpoint)},
                        dataset={"name": "digits", "max_train_samples": 320},
                        training={"seed": 2, "epochs": 2, "batch_size": 32, "lr": 3e-3, "ema_decay": 0.9},
                        export={"enabled": False})
    full = run({**cfg, "export": {"enabled": True}}, tmp_path / "full")
    run(cfg, tmp_path / "killed", stop_after_epoch=1)
    resumed = run(cfg, tmp_path / "killed", resume=True)
    a, b = load_checkpoint(tmp_path / "full" / CHECKPOINT), load_checkpoint(tmp_path / "killed" / CHECKPOINT)
    assert a["ema"]["steps"] == b["ema"]["steps"] == 2 * 10
    for k, v in a["ema"]["shadow"].items():
        assert torch.equal(v, b["ema"]["shadow"][k]), k
    assert full["mismatches"] == resumed["mismatches"]
    # checkpoint.pt keeps the raw weights to train on; rebuilt for export, it gives the averages.
    ctrl, cmodel, data = load_compressed(tmp_path / "full" / "config.json", tmp_path / "full" / CHECKPOINT)
    test = DataLoader(data.test, batch_size=256)
    ref, comp = predict(ctrl.reference, test)[0].argmax(1), predict(cmodel, test)[0].argmax(1)
    assert full["mismatches"] == int((ref != comp).sum())  # what the run reported is the averaged model
    rebuilt = {k: v.detach() for k, v in cmodel.named_parameters() if k in a["ema"]["shadow"]}
    assert rebuilt.keys() == a["ema"]["shadow"].keys()
    assert all(torch.equal(v, a["ema"]["shadow"][k]) for k, v in rebuilt.items())
    raw = a["ctrl"]["model"]
    assert sum(k in raw for k in rebuilt) >= 4 and any(not torch.equal(raw[k], v) for k, v in rebuilt.items() if k in raw)
    # The exported IR is the averaged model, not the raw weights of the last step.
    save_checkpoint({**a, "ema": None}, tmp_path / "raw.pt")
    _, raw_model, _ = load_compressed(tmp_path / "full" / "config.json", tmp_path / "raw.pt")
    inputs = torch.cat([x for x, _ in test])
    ir = infer(compile_ir(tmp_path / "full" / "ir" / "compressed.xml"), inputs.numpy())
    to_average = np.abs(ir - predict(cmodel, test)[0]).max()
    to_raw = np.abs(ir - predict(raw_model, test)[0]).max()
    assert to_average < to_raw / 10, (to_average, to_raw)
