"""bench/cifar10.py on a tiny CIFAR-shaped zip (never the real data): rows, cache, table, plot, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from conftest import REPO
from PIL import Image

SCRIPT = REPO / "bench" / "cifar10.py"


def tiny_cifar(zip_path: Path, classes=("cat", "dog", "frog"), per_class: int = 12) -> Path:
    """32x32 JPEGs in train/<class>, test/<class>: each class a colour, plus noise, so it is learnable."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(zip_path, "w") as zf:
        for split in ("train", "test"):
            for c, name in enumerate(classes):
                for i in range(per_class):
                    pixels = rng.integers(0, 80, size=(32, 32, 3), dtype=np.uint8)
                    pixels[..., c] += 150
                    path = zip_path.parent / f"{split}-{name}-{i}.jpg"
                    Image.fromarray(pixels).save(path)
                    zf.write(path, f"{split}/{name}/{i}.jpg")
    return zip_path


def bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--workdir", str(tmp_path / "runs"), "--output", str(tmp_path / "out.json"),
           "--reference", str(tmp_path / "ref.pt"), "--throughput-samples", "8", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=900)


def test_rows_are_measured_on_the_irs_cached_and_tabled(tmp_path):
    data = tiny_cifar(tmp_path / "tiny.zip")
    common = ["--data", str(data), "--set", "training.reference.epochs=2", "--set", "training.batch_size=16",
              "--set", "compression[0].subset_size=16"]
    proc = bench(tmp_path, *common, "--only", "int8_ptq", "int8_qat")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ref.pt").exists() and (tmp_path / "ref.json").exists()  # reference trained and cached
    report = json.loads((tmp_path / "out.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["int8_ptq", "int8_qat"]
    for row in rows.values():
        assert row["num_samples"] == 36
        assert set(row["ir"]) == {"f32", "default"} and row["ir"]["f32"]["precision"] == "f32"
        assert 0 <= row["ir"]["f32"]["mismatches_reference_correct"] <= row["ir"]["f32"]["mismatches"] <= 36
        assert row["throughput"]["f32"]["ratio"] > 0 and row["throughput"]["default"]["ratio"] > 0
        assert Path(row["ir_paths"]["compressed"]).is_file()
    assert rows["int8_ptq"]["epochs"] == 0 and rows["int8_qat"]["epochs"] == 1
    assert rows["int8_qat"]["epoch_time_ratio"] == 1.0
    table = (tmp_path / "out.md").read_text()
    assert "`int8_ptq`" in table and "`int8_qat`" in table
    assert (tmp_path / "out.png").stat().st_size > 0

    # Unchanged configs are not run again; the 'best' rows need an INT8 ladder row first.
    again = bench(tmp_path, *common, "--only", "int8_qat")
    assert again.returncode == 0 and "int8_qat: cached" in again.stderr
    assert json.loads((tmp_path / "out.json").read_text())["rows"]["int8_qat"] == rows["int8_qat"]
    best = bench(tmp_path, *common, "--only", "w4a4_best")
    assert best.returncode == 2 and "int8_kd" in best.stderr.strip().splitlines()[-1]


def test_missing_data_is_a_one_line_error(tmp_path):
    proc = bench(tmp_path, "--data", str(tmp_path / "nowhere.zip"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: --data: {tmp_path / 'nowhere.zip'} does not exist"]
    assert not (tmp_path / "out.json").exists()


def test_the_flip_first_development_split_is_every_training_image_no_row_trained_or_selected_on(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from flip_first_dev import development_split
    finally:
        sys.path.remove(str(REPO / "bench"))
    from nncf_lossless.config import load_config
    from nncf_lossless.data import load_dataset

    data = tiny_cifar(tmp_path / "tiny.zip")
    config = load_config({"input_info": {"sample_size": [1, 3, 32, 32]},
                          "dataset": {"name": "image_folder", "path": str(data), "max_train_samples": 12,
                                      "validation": {"count": 6}},
                          "compression": [{"algorithm": "quantization"}]})
    x, y, ids = development_split(config)
    used = load_dataset(config["dataset"]).split_ids
    assert len(ids) == len(y) == len(x) == 36 - 6 - 12 and len(set(ids)) == len(ids)
    for split in ("train", "validation", "test"):
        assert not set(ids) & set(used[split]), split
    assert set(ids) | set(used["train"]) | set(used["validation"]) == set(range(36))  # the whole training folder
    assert x.shape[1:] == (3, 32, 32) and x.dtype == np.float32


def test_flip_margins_bins_each_image_by_the_reference_margin_and_counts_its_flips():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from flip_margins import EDGES, by_bin, margins
    finally:
        sys.path.remove(str(REPO / "bench"))
    logits = np.log(np.array([[0.505, 0.49, 0.005], [0.6, 0.3, 0.1], [0.98, 0.01, 0.01], [0.05, 0.15, 0.8]]))
    m = margins(logits)
    assert np.allclose(m, [0.015, 0.3, 0.97, 0.65])
    bins = by_bin(m, np.array([True, True, False, False]))
    assert len(bins) == len(EDGES) - 1 and sum(b["images"] for b in bins) == 4
    counts = {(b["margin_from"], b["margin_to"]): (b["images"], b["flips"]) for b in bins if b["images"]}
    assert counts == {(0.01, 0.02): (1, 1), (0.2, 0.5): (1, 1), (0.5, 1.0): (2, 0)}
