"""Atomic file writes (no torch: the device-side checker uses them too).

Everything goes to a temporary file in the target directory first and is moved into place with
``os.replace``, so a run killed mid-write leaves the previous file intact, never half of a new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Calls ``write`` on a temporary binary file and moves it to ``path`` once it is complete."""
    path = Path(path)
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


def write_json(obj: Any, path: Path) -> None:
    atomic_write(Path(path), lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def write_text(text: str, path: Path) -> None:
    atomic_write(Path(path), lambda f: f.write(text.encode()))
