"""IR-in-the-loop evaluation and best-checkpoint selection in the trainer (digits, real OpenVINO)."""

from __future__ import annotations

import json

import torch
from conftest import digits_config

from nncf_lossless.checkpoint import load_checkpoint
from nncf_lossless.training.trainer import BEST, run


def test_ir_measured_mismatches_are_recorded_and_the_best_epoch_is_kept(tmp_path):
    cfg = digits_config(dataset={"name": "digits", "validation": {"fraction": 0.2}},
                        training={"seed": 0, "epochs": 3, "batch_size": 64, "lr": 3e-3, "evaluate_ir": True,
                                  "select_checkpoint": "fewest_mismatches", "reference": {"epochs": 2, "lr": 3e-3}})
    results = run(cfg, tmp_path)
    history = results["history"]
    assert all("ir_mismatches" in h for h in history)
    scores = [(h["ir_mismatches"], -h["ir_compressed_accuracy"]) for h in history]
    best_epoch = min(range(len(scores)), key=scores.__getitem__) + 1
    assert results["selected_epoch"] == best_epoch
    assert load_checkpoint(tmp_path / BEST)["epoch"] == best_epoch
    # Scored on the validation split; the run ends with the selected weights, reported on the test split.
    assert all(h["split"] == "validation" for h in history) and results["num_samples"] == 450
    # Both sides are reported; the IR-measured count is the f32 OpenVINO run's.
    sides = results["mismatches_by_side"]
    assert sides["pytorch"] == results["mismatches"]
    assert sides["openvino CPU f32"] == next(r for r in results["openvino"]["runs"] if r["precision"] == "f32")["mismatches"]
    assert not (tmp_path / ".ir-eval").exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["selected_epoch"] == best_epoch


def test_last_checkpoint_is_kept_by_default(tmp_path):
    cfg = digits_config(training={"seed": 0, "epochs": 2, "batch_size": 64, "lr": 3e-3, "reference": {"epochs": 1}},
                        export={"enabled": False})
    results = run(cfg, tmp_path)
    assert results["selected_epoch"] == 2 and not (tmp_path / BEST).exists()
    assert "ir_mismatches" not in results["history"][0]
    assert torch.is_tensor(load_checkpoint(tmp_path / "checkpoint.pt")["rng"])
