"""diff-layers: PyTorch vs IR layer by layer, with real NNCF quantizers and OpenVINO CPU."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import openvino as ov
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
    # Piped (not a terminal), each layer is still one unbroken table row, and the summary counts the rows.
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    for layer in report["layers"]:
        assert sum(line.startswith(f"│ {layer['name']} ") for line in rows) == 1, (layer["name"], proc.stdout)
    assert len(rows) == len(report["layers"])
    assert f"{len(report['layers'])} layers: 0 DIVERGES" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "nncf_lossless", "diff-layers", "--model", str(run), "--ir", str(ir),
                          "--data", str(tmp_path / "diff.json")], capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--data" in bad.stderr


def _layer(name, diverged=False, flipped=None, kind="quantizer"):
    from nncf_lossless.export.layer_diff import LayerDiff

    return LayerDiff(name=name, kind=kind, ir_node=name, shape=[1], max_abs_diff=1.0 if diverged or flipped else 0.0,
                     mean_abs_diff=0.0, flipped_fraction=flipped, diverged=diverged)


def test_layers_that_differ_only_downstream_of_a_rounding_tie_are_not_divergences():
    from nncf_lossless.cli.diff_layers import summary_lines
    from nncf_lossless.export.layer_diff import DIVERGES, DOWNSTREAM, ROUNDING_TIE, TIE_DOWNSTREAM, classify

    # q1 is a tie on the main path; m2, q3 follow it. b5 sits on a branch q1 does not reach and
    # diverges on its own; q6 is downstream of b5.
    layers = [_layer("q0"), _layer("q1", flipped=0.01), _layer("m2", True, kind="module"), _layer("q3", True, 0.2),
              _layer("q4", flipped=0.0), _layer("b5", True, kind="module"), _layer("q6", True, 0.1)]
    edges = {"q0": {"q1", "m2", "q3", "q4", "q6"}, "q1": {"m2", "q3", "q4", "q6"}, "m2": {"q3", "q4", "q6"},
             "q3": {"q4", "q6"}, "q4": {"q6"}, "b5": {"q6"}, "q6": set()}
    first, tie = classify(layers[:5], lambda a, b: b in edges[a])
    assert [layer.status for layer in layers[:5]] == ["", ROUNDING_TIE, TIE_DOWNSTREAM, TIE_DOWNSTREAM, ""]
    assert (first, tie) == (None, "q1")
    report = {"layers": [vars(layer) for layer in layers[:5]], "first_divergence": first, "first_rounding_tie": tie,
              "logits": {"max_abs_diff": 0.1, "top1_disagreements": 0}}
    lines = summary_lines(report)
    assert "5 layers: 0 DIVERGES, 0 DOWNSTREAM (of a divergence), 1 rounding tie, 2 TIE-DOWNSTREAM" in lines[1]
    assert lines[2] == "no divergence beyond float noise; the 2 layers that differ are downstream of a rounding tie (first: q1)"

    first, tie = classify(layers, lambda a, b: b in edges[a])
    assert [layer.status for layer in layers[5:]] == [DIVERGES, DOWNSTREAM]
    assert (first, tie) == ("b5", "q1")
    report.update(layers=[vars(layer) for layer in layers], first_divergence=first)
    assert summary_lines(report)[2] == "first divergence beyond float noise: b5"


def test_downstream_follows_the_ir_graph(exported):
    from nncf_lossless.export.layer_diff import _reachability

    ctrl, model, ir, inputs, _ = exported
    report = diff_layers(model, ir, inputs[:16], ctrl.example_input)
    assert {layer["status"] for layer in report["layers"]} <= {"", "rounding tie"}
    assert sum(report["status_counts"].values()) == len(report["layers"])
    ir_model = ov.Core().read_model(ir)
    by_name = {op.get_friendly_name(): op for op in ir_model.get_ordered_ops()}
    nodes = {layer["name"]: by_name[layer["ir_node"]] for layer in report["layers"]}
    reaches = _reachability(nodes)
    names = [layer["name"] for layer in report["layers"]]
    # The digits CNN is a chain: each layer reaches every later one, never an earlier one.
    assert all(reaches(names[0], n) for n in names[1:])
    assert not any(reaches(names[-1], n) for n in names[:-1])


def test_from_a_config_the_reference_weights_come_from_checkpoint(tmp_path, exported, reference_checkpoint, capsys):
    from nncf_lossless.cli.main import main

    _, _, ir, _, cfg = exported
    write_json(cfg, tmp_path / "c.json")
    base = ["diff-layers", "--model", str(tmp_path / "c.json"), "--ir", str(ir), "--samples", "16"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --model: {tmp_path / 'c.json'} names no FP32 reference") and "--checkpoint" in err
    assert main([*base, "--checkpoint", str(reference_checkpoint), "--output", str(tmp_path / "d.json")]) == 0
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["num_samples"] == 16 and report["layers"]
