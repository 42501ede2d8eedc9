"""Atomic writes of checkpoints and reports, and safe checkpoint reads.

Everything goes to a temporary file in the target directory first and is moved into place with
``os.replace``, so a run killed mid-write leaves the previous file intact, never half of a new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nncf_lossless.checker.atomic import atomic_write as _atomic_write
from nncf_lossless.checker.atomic import write_json
from nncf_lossless.errors import DataError

__all__ = ["load_checkpoint", "save_checkpoint", "write_json"]


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
