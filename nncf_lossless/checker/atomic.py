"""Atomic writes of files and whole directories (no torch: the device-side checker uses them too).

The one place in the package that writes through temporaries. A file goes to a temporary file in
the target directory first and is moved into place with ``os.replace``, so a run killed
mid-write leaves the previous file intact, never half of a new one. A directory
(:func:`atomic_directory`: an IR pair, an extracted archive) is filled as a temporary sibling and
swapped in whole, so readers see the old set of files or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def atomic_directory(path: Path, *, keep_existing: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yields a new empty directory next to ``path``; once the block completes it replaces ``path`` whole.

    If the block raises, ``path`` is untouched and the temporary directory removed. ``keep_existing``
    (e.g. "it carries a completion marker") keeps a ``path`` that another process completed first
    and discards ours. Replacing an existing directory takes two renames (old one aside, new one
    in): between them ``path`` is briefly absent, never partly written; a crash right there leaves
    the old directory as ``.NAME.old-*`` beside it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        _replace_directory(tmp, path, keep_existing)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was moved into place


def _replace_directory(new: Path, path: Path, keep_existing: Callable[[Path], bool] | None) -> None:
    if path.exists() and keep_existing is not None and keep_existing(path):
        return
    if not path.exists():
        try:
            os.replace(new, path)
            return
        except OSError:
            # Another process created it meanwhile: keep theirs if it is complete, else swap below.
            if keep_existing is not None and keep_existing(path):
                return
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)
