"""diff-layers: PyTorch vs IR layer by layer, with real NNCF quantizers and OpenVINO CPU."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import digits_config

from nncf_lossless import create_compressed_model
from nncf_lossless.checkpoint import save_checkpoint, write_json
from nncf_lossless.errors import DataError
from nncf_lossless.export.layer_diff import diff_layers


@pytest.fixture(scope="module")
def exported(tmp_path_factory, _trained_reference, digits):
    cfg = digits_config(compression=[{"algorithm": "quantization", "weights": {"bits": 4}, "activations": {"bits": 4}}])
    calibration = torch.utils.data.DataLoader(digits.calibration, batch_size=64)
    ctrl, model = create_compressed_model(copy.deepcopy(_trained_reference), cfg, calibration_data=calibration)
    paths = ctrl.export(tmp_path_factory.mktemp("layer_diff") / "ir")
    inputs = np.stack([digits.test[i][0].numpy() for i in range(128)])
    return ctrl, model, paths["compressed"], inputs, cfg


def test_an_ir_matches_the_model_it_was_exported_from(exported):
    ctrl, model, ir, inputs, _ = exported
    report = diff_layers(model, ir, inputs, ctrl.example_input)
    kinds = {layer["kind"] for layer in report["layers"]}
    assert kinds == {"quantizer", "module"}
    assert not report["unmatched"]["quantizers"]
    assert report["first_divergence"] is None
    assert report["precision"] == "f32"
    assert report["logits"]["top1_disagreements"] == 0


def test_the_first_diverging_layer_is_the_one_that_changed(exported):
    ctrl, model, ir, inputs, _ = exported
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.features[1][1].bias.add_(0.5)  # the second BatchNorm, after the IR was written
    report = diff_layers(model, ir, inputs, ctrl.example_input)
    # The BatchNorm itself, or, where OpenVINO folded it into its convolution, the quantizer after its ReLU.
    first = report["first_divergence"]
    assert first in ("features.1.1", "post_hooks.features/1/2/relu/0__0.0")
    names = [layer["name"] for layer in report["layers"]]
    before = names[: names.index(first)]
    assert before and not any(layer["diverged"] for layer in report["layers"] if layer["name"] in before)


def test_samples_that_do_not_fit_the_ir_are_a_one_line_error(exported):
    ctrl, model, ir, inputs, _ = exported
    with pytest.raises(DataError, match=r"--data: samples of shape \[1, 4, 4\]"):
        diff_layers(model, ir, inputs[:, :, :4, :4], ctrl.example_input)
    with pytest.raises(DataError, match="does not exist"):
        diff_layers(model, ir.with_name("missing.xml"), inputs, ctrl.example_input)


def test_cli_reads_a_run_directory_and_writes_json(tmp_path, exported):
    ctrl, _, ir, inputs, cfg = exported
    run = tmp_path / "run"
    save_checkpoint({"ctrl": ctrl.state_dict()}, run / "checkpoint.pt")
    write_json(cfg, run / "config.json")
    np.savez(tmp_path / "data.npz", inputs=inputs)
    out = tmp_path / "diff.json"
    proc = subprocess.run([sys.executable, "-m", "nncf_lossless", "diff-layers", "--model", str(run), "--ir", str(ir),
                           "--data", str(tmp_path / "data.npz"), "--samples", "64", "--output", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["num_samples"] == 64 and report["first_divergence"] is None
    bad = subprocess.run([sys.executable, "-m", "nncf_lossless", "diff-layers", "--model", str(run), "--ir", str(ir),
                          "--data", str(tmp_path / "diff.json")], capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--data" in bad.stderr
