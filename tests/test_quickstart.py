"""The README's quick start, as a newcomer runs it: the demo, then its "Next" check and bundle lines.

The commands are parsed out of README.md, not copied here, so the README cannot drift from what
works. The demo runs with a cheap override (one reference epoch, one fine-tuning epoch): the
commands and files are what is tested, not the demo's accuracy.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from nncf_lossless.checker.core import load_samples

CHEAP = ["--set", "training.reference.epochs=1", "--set", "training.epochs=1"]


def _quick_start() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def _blocks(section: str) -> list[list[str]]:
    """The commands of each fenced bash block, with backslash continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return [[line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()] for block in blocks]


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "nncf-lossless", command
    return [sys.executable, "-m", "nncf_lossless", *words[1:]]


def _run(argv: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(argv, cwd=cwd, env=env, check=False, capture_output=True, text=True, timeout=600)


def test_the_quick_start_is_exactly_two_commands():
    first, *_ = _blocks(_quick_start())
    assert first == ['pip install -e ".[test]" && nncf-lossless demo', "pytest"]


@pytest.fixture(scope="module")
def next_commands() -> dict[str, str]:
    section = _quick_start()
    assert "**Next**" in section
    after = section.split("**Next**", 1)[1]
    commands = {c.split()[1]: c for c in _blocks(after)[0] if c.startswith("nncf-lossless ")}
    assert sorted(commands) == ["bundle", "check"]
    return commands


def test_the_readme_next_lines_run_on_the_demos_output(tmp_path, next_commands):
    demo = _blocks(_quick_start())[0][0].split("&&")[1].strip()
    proc = _run(_argv(demo) + CHEAP, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ref acc" in proc.stdout and "comp acc" in proc.stdout and "mismatches" in proc.stdout
    assert "training one first, 1 epoch (training.reference.epochs)" in proc.stderr
    run_dir = tmp_path / "nncf-lossless-demo"
    results = json.loads((run_dir / "results.json").read_text())
    assert f"{100 * results['compressed']['accuracy']:.2f}%" in proc.stdout
    # The demo says where the test split went, and the file is what check reads.
    assert f"test split: {run_dir.relative_to(tmp_path) / 'test.npz'}" in proc.stdout
    inputs, labels = load_samples(run_dir / "test.npz")
    assert inputs.shape == (results["num_samples"], 1, 8, 8) and inputs.dtype == np.float32
    assert abs(float(inputs.mean())) < 0.5 < float(inputs.std()), "normalised inputs, not raw pixels"

    check = _run(_argv(next_commands["check"]), tmp_path)
    assert check.returncode == 0, check.stderr
    report_path = re.search(r"--output-dir (\S+)", next_commands["check"]).group(1)
    report = json.loads((tmp_path / report_path / "consistency.json").read_text())
    assert report["num_samples"] == results["num_samples"]
    cpu_f32 = next(r for r in report["runs"] if r["device"] == "CPU" and r["requested_precision"] == "f32")
    on_ir = next(r for r in results["openvino"]["runs"] if r["requested_precision"] == "f32")
    assert cpu_f32["mismatches"] == on_ir["mismatches"], "check measures what the demo measured on the IRs"

    bundle = _run(_argv(next_commands["bundle"]), tmp_path)
    assert bundle.returncode == 0, bundle.stderr
    bundle_dir = tmp_path / re.search(r"--output (\S+)", next_commands["bundle"]).group(1)
    assert (bundle_dir / "check_bundle.py").is_file() and (bundle_dir / "samples.npz").is_file()
    with np.load(bundle_dir / "samples.npz") as npz:
        np.testing.assert_array_equal(npz["labels"], labels)


def test_the_data_command_writes_any_configs_split(tmp_path, capsys):
    from nncf_lossless.cli.main import main
    from nncf_lossless.config import load_config
    from nncf_lossless.data import load_dataset
    from nncf_lossless.export.split_npz import split_arrays

    config = REPO / "configs" / "digits_4bit_frozen_bn.json"
    for split, count in (("test", 450), ("train", 1347)):
        out = tmp_path / f"{split}.npz"
        assert main(["data", "--config", str(config), "--split", split, "--output", str(out)]) == 0
        assert f"{split} split: {count} samples -> {out}" in capsys.readouterr().out
        inputs, labels = load_samples(out)
        expected_inputs, expected_labels = split_arrays(load_dataset(load_config(config)["dataset"]), split)
        np.testing.assert_array_equal(inputs, expected_inputs)
        np.testing.assert_array_equal(labels, expected_labels)
    # --set reaches the split, like every command that reads a config.
    assert main(["data", "--config", str(config), "--split", "test", "--set", "dataset.max_test_samples=20",
                 "--output", str(tmp_path / "small.npz")]) == 0
    assert len(load_samples(tmp_path / "small.npz")[1]) == 20
    assert main(["data", "--config", str(config), "--split", "test", "--output", str(tmp_path / "x.txt")]) == 2
    assert capsys.readouterr().err.startswith("error: --output:") and not (tmp_path / "x.txt").exists()


def test_the_validation_split_is_written_where_the_dataset_has_one(digits, tmp_path):
    from nncf_lossless.errors import ConfigError
    from nncf_lossless.export.split_npz import split_arrays

    if getattr(digits, "validation", None) is None:
        with pytest.raises(ConfigError, match="^--split: this dataset has no validation split$"):
            split_arrays(digits, "validation")
    else:
        inputs, labels = split_arrays(digits, "validation")
        assert len(inputs) == len(labels) == len(digits.validation)
