"""The built-in trainer and CLI end to end on digits: results, resume after a kill, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import digits_config

from nncf_lossless.checkpoint import load_checkpoint
from nncf_lossless.errors import ConfigError
from nncf_lossless.training.trainer import CHECKPOINT, run


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "nncf_lossless", *map(str, args)], check=False, capture_output=True, text=True,
                          timeout=timeout)


def test_train_writes_results_with_mismatches_and_openvino_runs(tmp_path):
    results = run(digits_config(), tmp_path)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["num_samples"] == 450
    assert on_disk["reference"]["accuracy"] > 0.8 and on_disk["compressed"]["accuracy"] > 0.8
    assert on_disk["mismatches"] == len(on_disk["mismatch_ids"])
    assert 0 <= on_disk["mismatches_reference_correct"] <= on_disk["mismatches"]
    flips = on_disk["flip_matrix"]
    assert sum(map(sum, flips)) - sum(flips[i][i] for i in range(10)) == on_disk["mismatches"]
    assert [h["epoch"] for h in on_disk["history"]] == [1, 2]
    runs = on_disk["openvino"]["runs"]
    assert [(r["requested_precision"], r["reference_precision"]) for r in runs] == [("f32", "f32"), ("default", "f32")]
    assert runs[0]["precision"] == "f32"
    assert runs[0]["source_vs_ir"]["reference"]["top1_disagreements"] == 0
    # The same IR with the THROUGHPUT hint's streams: counted too, and here the same labels.
    assert runs[0]["throughput"]["mismatches"] == runs[0]["mismatches"]
    assert runs[0]["throughput"]["labels_differ_from_one_stream"] == 0 and runs[0]["throughput"]["streams"] >= 1
    for name in ("reference.pt", "checkpoint.pt", "config.json", "ir/reference.xml", "ir/compressed.xml"):
        assert (tmp_path / name).exists(), name


def test_a_run_killed_after_an_epoch_resumes_to_the_same_weights(tmp_path, reference_checkpoint):
    # The session's reference and 320 training samples keep three runs cheap; resuming the
    # reference itself is the next test's job, and nothing here depends on the IRs.
    config = digits_config(model={"name": "digits_cnn", "checkpoint": str(reference_checkpoint)},
                           dataset={"name": "digits", "max_train_samples": 320},
                           training={"seed": 3, "epochs": 4, "batch_size": 16, "lr": 1e-3},
                           export={"enabled": False})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "nncf_lossless", "train", "--config", str(path),
                             "--output-dir", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / CHECKPOINT).exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    epoch_at_kill = load_checkpoint(killed / CHECKPOINT)["epoch"]
    assert 1 <= epoch_at_kill < 4, "the kill must land mid-run for this test to mean anything"
    assert not (killed / "results.json").exists()

    proc = _cli("train", "--config", path, "--output-dir", killed, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert f"after epoch {epoch_at_kill}" in proc.stderr
    run(config, tmp_path / "straight")

    resumed = load_checkpoint(killed / CHECKPOINT)
    straight = load_checkpoint(tmp_path / "straight" / CHECKPOINT)
    assert resumed["epoch"] == straight["epoch"] == 4
    assert resumed["ctrl"]["model"].keys() == straight["ctrl"]["model"].keys()
    for key, value in straight["ctrl"]["model"].items():
        assert torch.equal(resumed["ctrl"]["model"][key], value), key
    assert resumed["history"] == straight["history"]


def test_a_run_killed_while_the_reference_trains_resumes_it_to_the_same_weights(tmp_path):
    config = digits_config(dataset={"name": "digits", "max_train_samples": 320},
                           training={"seed": 5, "epochs": 1, "batch_size": 16, "reference": {"epochs": 5, "lr": 3e-3}},
                           export={"enabled": False})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    killed = tmp_path / "killed"
    progress = killed / "reference_progress.pt"
    proc = subprocess.Popen([sys.executable, "-m", "nncf_lossless", "train", "--config", str(path),
                             "--output-dir", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not progress.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    epoch_at_kill = load_checkpoint(progress)["epoch"]
    assert 1 <= epoch_at_kill < 5 and not (killed / "reference.pt").exists(), "the kill must land mid-reference"

    proc = _cli("train", "--config", path, "--output-dir", killed, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert f"resumed after epoch {epoch_at_kill}/5" in proc.stderr
    assert not progress.exists()
    run(config, tmp_path / "straight")
    resumed = load_checkpoint(killed / "reference.pt")["state_dict"]
    straight = load_checkpoint(tmp_path / "straight" / "reference.pt")["state_dict"]
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key


def test_resume_refuses_a_changed_config(tmp_path, reference_checkpoint):
    def config(epochs):
        return digits_config(model={"name": "digits_cnn", "checkpoint": str(reference_checkpoint)},
                             dataset={"name": "digits", "max_train_samples": 128}, training={"epochs": epochs},
                             export={"enabled": False})

    run(config(1), tmp_path)
    with pytest.raises(ConfigError, match="^--resume: the config differs from"):
        run(config(2), tmp_path, resume=True)


def test_a_directory_holding_a_run_is_resumed_overwritten_or_refused(tmp_path):
    config = digits_config(dataset={"name": "digits", "max_train_samples": 256},
                           training={"epochs": 1, "reference": {"epochs": 1}}, export={"enabled": False})
    run(config, tmp_path)
    with pytest.raises(ConfigError, match=r"--output-dir: .* already holds a run \(config.json, reference.pt, "
                                          r"checkpoint.pt, results.json\); pass --resume"):
        run(config, tmp_path)
    first = load_checkpoint(tmp_path / CHECKPOINT)
    (tmp_path / CHECKPOINT).write_bytes(b"stale")
    run(config, tmp_path, overwrite=True)  # starts over: the stale checkpoint is not read
    again = load_checkpoint(tmp_path / CHECKPOINT)
    assert all(torch.equal(v, again["ctrl"]["model"][k]) for k, v in first["ctrl"]["model"].items())


@pytest.mark.parametrize("section,message", [
    ({"dataset": {"name": "image_folder", "path": "/no/such/data.zip"}}, "dataset.path: /no/such/data.zip does not exist"),
    ({"input_info": {"sample_size": [1, 3, 32, 32]}},
     "input_info.sample_size: [1, 3, 32, 32] does not match the dataset's samples [1, 1, 8, 8]"),
    ({"model": {"name": "resnet1000"}}, "model.name: unknown model 'resnet1000'"),
    ({"model": {"name": "digits_cnn", "checkpoint": "/no/such/ref.pt"}}, "model.checkpoint: /no/such/ref.pt does not exist"),
])
def test_cli_bad_input_gives_one_line(tmp_path, section, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(digits_config(**section)))
    proc = _cli("train", "--config", path, "--output-dir", tmp_path / "out")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {message}"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_reference_checkpoint_of_another_model_is_a_one_line_error(tmp_path):
    from nncf_lossless.checkpoint import save_checkpoint
    from nncf_lossless.models import build_model

    save_checkpoint({"state_dict": build_model({"name": "resnet20"}, num_classes=10, in_channels=1).state_dict()},
                    tmp_path / "r20.pt")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(digits_config(model={"name": "digits_cnn", "checkpoint": str(tmp_path / "r20.pt")})))
    proc = _cli("train", "--config", path, "--output-dir", tmp_path / "out")
    assert proc.returncode == 2
    expected = f"error: model.checkpoint: {tmp_path / 'r20.pt'} does not fit model 'digits_cnn'"
    assert proc.stderr.strip().splitlines()[-1].startswith(expected)


def test_cli_export_rebuilds_the_ir_pair_from_a_checkpoint(tmp_path, reference_checkpoint):
    config = digits_config(model={"name": "digits_cnn", "checkpoint": str(reference_checkpoint)},
                           dataset={"name": "digits", "max_train_samples": 256}, training={"epochs": 1},
                           export={"enabled": False})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    run(config, tmp_path / "run")
    assert not (tmp_path / "run" / "ir").exists()
    proc = _cli("export", "--config", path, "--checkpoint", tmp_path / "run" / CHECKPOINT, "--output-dir", tmp_path / "ir")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ir" / "compressed.xml").exists() and (tmp_path / "ir" / "reference.xml").exists()
    bad = _cli("export", "--config", path, "--checkpoint", reference_checkpoint, "--output-dir", tmp_path / "x")
    assert bad.returncode == 2 and "is not a training checkpoint" in bad.stderr
