"""DDP under torchrun: two CPU processes (gloo) on digits, checked against a single process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import REPO, digits_config

from nncf_lossless.checker.metrics import compare
from nncf_lossless.checkpoint import load_checkpoint, save_checkpoint
from nncf_lossless.training.loop import make_loaders, predict
from nncf_lossless.training.trainer import load_compressed

ENTRIES = [
    {"algorithm": "quantization", "subset_size": 128},
    {"algorithm": "label_preserving_distillation"},
    {"algorithm": "frozen_bn", "at_epoch": 1},
    # features.0 (16 channels) hints features.1 (32): an adapter outside the DDP module, trained on every rank.
    {"algorithm": "hint_distillation", "hint_points": ["features.1", "features.3"], "student_points": {"features.1": "features.0"},
     "weight": 0.5},
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(config_path, out, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(_free_port())]
    cmd = [*launcher, "-m", "nncf_lossless", "train", "--config", str(config_path), "--output-dir", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def setup(tmp_path_factory, _trained_reference):
    root = tmp_path_factory.mktemp("ddp")
    save_checkpoint({"state_dict": _trained_reference.state_dict()}, root / "reference.pt")
    # ema_decay: every rank keeps the same weight average; it is what the runs score, end with and resume.
    cfg = digits_config(model={"name": "digits_cnn", "checkpoint": str(root / "reference.pt")}, compression=ENTRIES,
                        training={"seed": 0, "epochs": 2, "batch_size": 64, "lr": 1e-3, "ema_decay": 0.9})
    for name, export in (("export", True), ("no_export", False)):
        (root / f"{name}.json").write_text(json.dumps({**cfg, "export": {"enabled": export}}))
    full = root / "full"
    _train(root / "export.json", full, 2)
    return root, full


def _final_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint.pt")["ctrl"]["model"]


def test_two_processes_end_with_identical_weights_and_single_process_counts(setup, digits):
    _root, full = setup
    results = json.loads((full / "results.json").read_text())
    assert results["distributed"]["world_size"] == 2 and results["distributed"]["backend"] == "gloo"
    assert results["distributed"]["ranks_identical"]
    assert results["statistics"]["frozen_bn"]["frozen"] and results["statistics"]["hint_distillation"]["adapters"] == ["features.1"]
    # The count a single process computes on the same final model and reference.
    ctrl, model, data = load_compressed(full / "config.json", full / "checkpoint.pt")
    loaders = make_loaders(data, ctrl.config["training"])
    ref_logits, labels = predict(ctrl.reference, loaders.test)
    comp_logits, _ = predict(model, loaders.test)
    single = compare(ref_logits, comp_logits, labels)
    assert results["mismatches"] == single["mismatches"] and results["num_samples"] == len(digits.test)
    assert results["compressed"]["accuracy"] == single["compressed"]["accuracy"]
    # Rank 0 alone wrote: one of each file, the IRs included, and nothing per rank.
    assert sorted(p.name for p in full.iterdir()) == ["checkpoint.pt", "config.json", "ir", "results.json"]
    assert (full / "ir" / "compressed.xml").exists()


def test_resumed_two_process_run_matches_an_uninterrupted_one(setup):
    root, full = setup
    uninterrupted = root / "uninterrupted"
    _train(root / "no_export.json", uninterrupted, 2)
    stopped = root / "stopped"
    _train(root / "no_export.json", stopped, 2, "--stop-after-epoch", "1")
    assert load_checkpoint(stopped / "checkpoint.pt")["epoch"] == 1 and not (stopped / "results.json").exists()
    _train(root / "no_export.json", stopped, 2, "--resume")
    expected, resumed = _final_weights(uninterrupted), _final_weights(stopped)
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    averages = [load_checkpoint(d / "checkpoint.pt")["ema"]["shadow"] for d in (uninterrupted, stopped)]
    assert averages[0].keys() == averages[1].keys() and all(torch.equal(v, averages[1][k]) for k, v in averages[0].items())
    # Export does not change training: the exporting run ended with the same weights.
    assert all(torch.equal(expected[k], v) for k, v in _final_weights(full).items())


def test_a_two_process_checkpoint_resumes_in_one_process(setup):
    root, _ = setup
    out = root / "one"
    _train(root / "no_export.json", out, 2, "--stop-after-epoch", "1")
    proc = subprocess.run([sys.executable, "-m", "nncf_lossless", "train", "--config", str(root / "no_export.json"),
                           "--output-dir", str(out), "--resume"], capture_output=True, text=True, timeout=600, check=False,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1, 2] and "distributed" not in results
