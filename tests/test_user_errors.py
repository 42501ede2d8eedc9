"""A newcomer's bad inputs: every command and sample says what is wrong in one line and exits 2.

Real files, real OpenVINO: a small 8x8 grey "digits" IR with the exporter's rt_info, PNG images
written with Pillow, a corrupt .xml and a corrupt checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
from conftest import REPO

DEPLOY = REPO / "samples" / "deploy_openvino.py"


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], check=False, capture_output=True, text=True, timeout=180,
                          **kwargs)


def _one_error_line(proc: subprocess.CompletedProcess, *expected: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def digits_ir(tmp_path_factory) -> Path:
    """(N, 1, 8, 8) -> (N, 10), carrying the rt_info the exporter writes (shape, mean/std, class names)."""
    path = tmp_path_factory.mktemp("ir") / "digits.xml"
    x = ops.parameter([-1, 1, 8, 8], np.float32, name="x")
    flat = ops.reshape(x, ops.constant(np.array([-1, 64])), False)
    weight = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
    model = ov.Model([ops.matmul(flat, ops.constant(weight), False, False)], [x], "digits")
    for key, value in {"input_shape": [1, 1, 8, 8], "mean": [0.3], "std": [0.4], "class_names": list("0123456789")}.items():
        model.set_rt_info(json.dumps(value), ["nncf_lossless", key])
    ov.save_model(model, path, compress_to_fp16=False)
    return path


def _png(path: Path, size: tuple[int, int], mode: str) -> Path:
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3 if mode == "RGB" else 1),
                                                      dtype=np.uint8).squeeze()).convert(mode).save(path)
    return path


def test_deploy_sample_classifies_an_image_that_fits(digits_ir, tmp_path):
    proc = _run(DEPLOY, "--model", digits_ir, _png(tmp_path / "ok.png", (8, 8), "L"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{tmp_path / 'ok.png'}: ")


def test_deploy_sample_refuses_an_image_that_does_not_fit_the_ir(digits_ir, tmp_path):
    rgb = _png(tmp_path / "photo.png", (32, 32), "RGB")
    _one_error_line(_run(DEPLOY, "--model", digits_ir, rgb), "photo.png: a 32x32 image with 3 channel(s) (RGB)",
                    "does not fit the IR's input [1, 1, 8, 8]", "--resize")
    grey = _png(tmp_path / "big.png", (16, 16), "L")
    _one_error_line(_run(DEPLOY, "--model", digits_ir, grey), "big.png: a 16x16 image with 1 channel(s)")
    assert _run(DEPLOY, "--model", digits_ir, "--resize", rgb).returncode == 0  # asked for explicitly


def test_deploy_sample_one_line_errors(digits_ir, tmp_path):
    image = _png(tmp_path / "ok.png", (8, 8), "L")
    _one_error_line(_run(DEPLOY, "--model", digits_ir, tmp_path / "missing.png"), "missing.png: image file does not exist")
    (tmp_path / "notimage.png").write_text("text")
    _one_error_line(_run(DEPLOY, "--model", digits_ir, tmp_path / "notimage.png"), "notimage.png: not a readable image")
    absent = next((d for d in ("GPU", "NPU") if d not in ov.Core().available_devices), None)
    if absent is not None:
        _one_error_line(_run(DEPLOY, "--model", digits_ir, image, "--device", absent),
                        f"--device: {absent} is not available here (available: ")
    corrupt = tmp_path / "corrupt.xml"
    corrupt.write_text(digits_ir.read_text()[:300])
    _one_error_line(_run(DEPLOY, "--model", corrupt, image), "corrupt.xml is not a readable OpenVINO IR (",
                    "Error parsing")
    _one_error_line(_run(DEPLOY, "--model", tmp_path / "none.xml", image), "none.xml is not an existing OpenVINO .xml")
    np.savez(tmp_path / "wrong.npz", x=np.zeros(3))
    _one_error_line(_run(DEPLOY, "--model", digits_ir, "--npz", tmp_path / "wrong.npz"), "has no 'inputs' array")
    np.savez(tmp_path / "shape.npz", inputs=np.zeros((2, 3, 32, 32), np.float32))
    _one_error_line(_run(DEPLOY, "--model", digits_ir, "--npz", tmp_path / "shape.npz"),
                    "inputs of shape [3, 32, 32] do not fit the IR's input")


def test_a_corrupt_ir_error_carries_openvinos_reason(digits_ir, tmp_path):
    corrupt = tmp_path / "corrupt.xml"
    corrupt.write_text(digits_ir.read_text()[:300])
    np.savez(tmp_path / "d.npz", inputs=np.zeros((4, 1, 8, 8), np.float32), labels=np.zeros(4, np.int64))
    line = _one_error_line(_run("-m", "nncf_lossless", "check", "--reference", digits_ir, "--compressed", corrupt,
                                "--data", tmp_path / "d.npz", "--output-dir", tmp_path / "c"),
                           "corrupt.xml is not a readable OpenVINO IR (")
    # The reason, not the location line OpenVINO starts with.
    assert "Exception from" not in line and "Error parsing" in line
    (tmp_path / "junk.xml").write_bytes(b"\x00\x01junk")
    _one_error_line(_run("-m", "nncf_lossless", "check", "--reference", digits_ir, "--compressed", tmp_path / "junk.xml",
                         "--data", tmp_path / "d.npz", "--output-dir", tmp_path / "c"), "junk.xml is not a readable OpenVINO IR")


def test_a_corrupt_checkpoint_is_one_line_without_unsafe_advice(tmp_path, capsys):
    import datetime

    import torch

    from nncf_lossless.cli.main import main

    config = REPO / "configs" / "digits_int8.json"
    torch.save({"ctrl": {}, "when": datetime.datetime(2026, 1, 1)}, tmp_path / "foreign.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    for name in ("foreign.pt", "cut.pt"):
        status = main(["export", "--config", str(config), "--checkpoint", str(tmp_path / name), "--output-dir", str(tmp_path / "ir")])
        line = _one_error_line(subprocess.CompletedProcess([], status, "", capsys.readouterr().err),
                               f"{name}: corrupt or not a checkpoint")
        assert "weights_only" not in line and "can still be loaded" not in line
    assert not (tmp_path / "ir").exists()


def test_output_piped_into_a_reader_that_stops_early_is_one_line(tmp_path):
    # The reader is gone before anything is written (head -0), so the write fails every time.
    reader_gone = subprocess.Popen([sys.executable, "-m", "nncf_lossless", "validate-config",
                                    str(REPO / "configs" / "digits_int8.json")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader_gone.stdout.close()
    stderr = reader_gone.stderr.read()
    reader_gone.wait(timeout=120)
    _one_error_line(subprocess.CompletedProcess([], reader_gone.returncode, "", stderr), "broken pipe")
