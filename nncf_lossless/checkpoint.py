"""Atomic writes of checkpoints and reports, and safe checkpoint reads.

Everything goes to a temporary file in the target directory first and is moved into place with
``os.replace``, so a run killed mid-write leaves the previous file intact, never half of a new one.
"""

from __future__ import annotations

import re
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
        raise DataError(f"{path}: corrupt or not a checkpoint ({_load_failure(err)})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a checkpoint (top level is {type(obj).__name__}, expected a dict)")
    return obj


def _load_failure(err: Exception) -> str:
    """What was wrong with the file, without torch's advice to load it unsafely.

    A refused pickle's message suggests ``weights_only=False``, which would run whatever code the
    file holds: exactly what a checkpoint from elsewhere must not do. Only the finding is kept.
    """
    text = str(err)
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return f"it holds a Python object of type {refused.group(1)}, which is not loaded; a checkpoint holds tensors"
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    # torch's zip reader explains itself in one sentence, then speculates for three more.
    reason = lines[0].split(". ")[0].rstrip(".") if lines else ""
    if isinstance(err, KeyError) or len(reason) < 8:  # the unpickler's bare KeyError('101') says nothing
        return f"{type(err).__name__} while unpickling: not a file torch.save wrote"
    return reason
