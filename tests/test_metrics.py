"""Mismatch metrics (NumPy only) and atomic checkpoint files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nncf_lossless.checker.metrics import compare, top1_margin
from nncf_lossless.checkpoint import load_checkpoint, save_checkpoint, write_json
from nncf_lossless.errors import DataError


def test_compare_counts_flips_against_the_reference_not_the_labels():
    ref = np.eye(3)[[0, 1, 2, 2]]          # reference says 0 1 2 2
    comp = np.eye(3)[[0, 2, 2, 1]]         # compressed says 0 2 2 1
    labels = np.array([0, 1, 1, 1])        # truth: reference right on 0 and 1
    r = compare(ref, comp, labels)
    assert r["mismatches"] == 2 and r["mismatch_ids"] == [1, 3]
    assert r["mismatches_reference_correct"] == 1
    assert r["reference"]["accuracy"] == 0.5 and r["compressed"]["accuracy"] == 0.5
    assert r["flip_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 6).flatmap(lambda c: st.tuples(
    arrays(np.float32, st.tuples(st.integers(1, 30), st.just(c)), elements=st.floats(-5, 5, width=32)),
    st.integers(0, 2**31 - 1))))
def test_compare_invariants(args):
    ref, seed = args
    rng = np.random.default_rng(seed)
    comp = ref + rng.normal(0, 1, ref.shape).astype(np.float32)
    labels = rng.integers(0, ref.shape[1], len(ref))
    r = compare(ref, comp, labels)
    flips = np.array(r["flip_matrix"])
    assert flips.sum() == len(ref)
    assert flips.sum() - np.trace(flips) == r["mismatches"] == len(r["mismatch_ids"])
    assert r["mismatches_reference_correct"] <= r["mismatches"]
    assert compare(ref, ref, labels)["mismatches"] == 0
    assert (top1_margin(ref) >= 0).all()


def test_compare_rejects_shapes_that_do_not_match():
    with pytest.raises(ValueError, match=r"logit shapes \(4, 3\) and \(4, 2\)"):
        compare(np.zeros((4, 3)), np.zeros((4, 2)), np.zeros(4))


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"epoch": 1}, path)
    with pytest.raises((TypeError, AttributeError)):
        save_checkpoint({"epoch": 2, "bad": lambda: None}, path)  # torch.save cannot pickle a lambda
    assert load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"], "no temporary file is left behind"


def test_checkpoints_load_without_unpickling_code(tmp_path):
    import fractions

    import torch

    path = tmp_path / "evil.pt"
    torch.save({"obj": fractions.Fraction(1, 3)}, path)  # any class outside torch's allow-list
    with pytest.raises(DataError, match=f"^{path}: corrupt or not a checkpoint .*fractions.Fraction") as refused:
        load_checkpoint(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pt: corrupt or not a checkpoint") as junk:
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"epoch": 1}, tmp_path / "cut.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "cut.pt").read_bytes()[:200])
    with pytest.raises(DataError, match="cut.pt: corrupt or not a checkpoint") as cut:
        load_checkpoint(tmp_path / "cut.pt")
    for err in (refused, junk, cut):
        # torch's own message advises weights_only=False, i.e. running the file's code: never passed on.
        assert "weights_only" not in str(err.value) and "can still be loaded" not in str(err.value), str(err.value)
        assert "\n" not in str(err.value)


def test_json_reports_are_readable_by_others(tmp_path):
    write_json({"a": 1}, tmp_path / "r.json")
    assert (tmp_path / "r.json").stat().st_mode & 0o044 == 0o044


def test_the_checker_side_imports_no_torch():
    code = ("import sys; import nncf_lossless.checker.core, nncf_lossless.checker.metrics, nncf_lossless.checker.ov_runner; "
            "bad = [m for m in ('torch', 'nncf') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
