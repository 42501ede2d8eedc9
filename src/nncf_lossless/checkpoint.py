"""Atomic writes of checkpoints and reports, and safe checkpoint reads.

Everything goes to a temporary file in the target directory first and is moved into place with
``os.replace``, so a run killed mid-write leaves the previous file intact, never half of a new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from nncf_lossless.errors import DataError


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        # mkstemp creates 0600; results and checkpoints are for whoever can read the run directory.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Reads a checkpoint with ``weights_only=True`` (no arbitrary code from pickles) onto the CPU."""
    if not path.is_file():
        raise DataError(f"{path}: checkpoint does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a corrupt or foreign file
        raise DataError(f"{path}: not a readable checkpoint ({type(err).__name__}: {str(err).splitlines()[0]})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a checkpoint (top level is {type(obj).__name__}, expected a dict)")
    return obj


def write_json(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))
