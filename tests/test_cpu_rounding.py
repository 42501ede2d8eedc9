"""INT8 residual blocks: the PyTorch model computes what OpenVINO's CPU plugin executes.

The CPU plugin runs the quantizer in front of each fused residual sum as a clamp without rounding.
With ``match_openvino_cpu`` the PyTorch model does the same, so the IR and PyTorch agree to float
noise; without it they differ by a rounding step at every such quantizer.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import digits_config
from torch.utils.data import DataLoader

from nncf_lossless import create_compressed_model
from nncf_lossless.checker.ov_runner import compile_ir, infer
from nncf_lossless.models import build_model

BLOCK_SUMS = [f"layer{stage}/{block}/bn2/batch_norm/0" for stage in (1, 2, 3) for block in range(3)]


@pytest.fixture(scope="module")
def resnet_reference(digits):
    torch.manual_seed(0)
    model = build_model({"name": "resnet20"}, num_classes=10, in_channels=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(2):
        for x, y in DataLoader(digits.train, batch_size=64, shuffle=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval()


def _compress(reference, digits, match: bool, state=None):
    cfg = digits_config(model={"name": "resnet20"},
                        # overflow_fix: without VNNI, full-range INT8 weights saturate in the IR (README, Known issues).
                        compression=[{"algorithm": "quantization", "subset_size": 128, "match_openvino_cpu": match,
                                      "overflow_fix": "enable"}])
    return create_compressed_model(copy.deepcopy(reference), cfg, DataLoader(digits.calibration, batch_size=64),
                                   compression_state=state)


def _torch_and_ir(ctrl, model, inputs, tmp_path):
    model.eval()
    with torch.no_grad():
        torch_logits = model(inputs).numpy()
    ir = ctrl.export(tmp_path)["compressed"]
    return torch_logits, infer(compile_ir(ir, "CPU", "f32"), inputs.numpy())


def test_int8_resnet_matches_the_cpu_plugin_only_with_clamp_only_sums(resnet_reference, digits, tmp_path):
    inputs = torch.stack([digits.test[i][0] for i in range(len(digits.test))])
    drift = {}
    for match in (True, False):
        ctrl, model = _compress(resnet_reference, digits, match)
        clamped = ctrl.statistics()["quantization"]["clamp_only_on_cpu"]
        assert clamped == (BLOCK_SUMS if match else [])
        torch_logits, ir_logits = _torch_and_ir(ctrl, model, inputs, tmp_path / str(match))
        drift[match] = float(np.abs(torch_logits - ir_logits).mean())
        if match:
            # The IR must give PyTorch's label on every digits test sample (a rounding tie may move a logit a little).
            assert int((torch_logits.argmax(1) != ir_logits.argmax(1)).sum()) == 0
    assert drift[True] < 2e-3, drift
    assert drift[True] < drift[False] / 10, drift


def test_clamp_only_quantizers_come_back_on_restore(resnet_reference, digits):
    ctrl, model = _compress(resnet_reference, digits, True)
    restored_ctrl, restored = _compress(resnet_reference, digits, True, state=ctrl.state_dict())
    assert restored_ctrl.statistics()["quantization"]["clamp_only_on_cpu"] == BLOCK_SUMS
    x = torch.stack([digits.test[i][0] for i in range(64)])
    model.eval()
    restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x))
