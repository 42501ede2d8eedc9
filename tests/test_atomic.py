"""The one atomic-write helper: files and whole directories; the IR pair is exported as a pair."""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
import torch
from torch import nn

from nncf_lossless.checker.atomic import atomic_directory
from nncf_lossless.errors import ConfigError
from nncf_lossless.export import ir


def test_atomic_directory_replaces_the_whole_directory(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    with atomic_directory(dest) as tmp:
        assert tmp.parent == dest.parent and tmp != dest
        (tmp / "new.txt").write_text("new")
        assert (dest / "stale.txt").exists(), "nothing is visible before the block completes"
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temporaries are left"


def test_a_failed_block_leaves_the_old_directory_untouched(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(dest) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (dest / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_keep_existing_keeps_a_directory_another_process_completed(tmp_path):
    dest = tmp_path / "out"
    with atomic_directory(dest, keep_existing=lambda d: (d / "done").exists()) as tmp:
        (tmp / "done").write_text("mine")
        dest.mkdir()  # the other process finishes first
        (dest / "done").write_text("theirs")
    assert (dest / "done").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _tiny():
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()


def _export(out):
    return ir.export_pair(_tiny(), _tiny(), out, example_input=torch.ones(1, 4), config={}, metadata={})


def test_export_writes_the_pair_and_a_failed_export_keeps_the_previous_pair(tmp_path, monkeypatch):
    out = tmp_path / "ir"
    paths = _export(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["compressed.bin", "compressed.xml", "reference.bin", "reference.xml"]
    real_save, calls = ov.save_model, []

    def save_then_die(model, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the reference is written, the process dies writing the compressed IR
            raise KeyboardInterrupt
        real_save(model, path, **kwargs)

    monkeypatch.setattr(ir.ov, "save_model", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        ir.export_pair(_tiny(), _tiny(), out, example_input=torch.full((1, 4), 2.0), config={"x": 1}, metadata={})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir"]
    compiled = ov.Core().compile_model(str(paths["compressed"]), "CPU")
    assert compiled(np.ones((2, 4), np.float32))[0].shape == (2, 3)


def test_export_refuses_a_directory_holding_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds other files than an IR pair \(notes.txt\); export into a directory of its own"):
        _export(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
