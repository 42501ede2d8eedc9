"""Safe, atomic, cached extraction of zip archives (used for zipped image-folder datasets)."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from nncf_lossless.checker.atomic import atomic_directory
from nncf_lossless.errors import DataError

COMPLETE_MARKER = ".complete"


def safe_extract_zip(zip_path: Path, dest: Path) -> Path:
    """Extract ``zip_path`` into the directory ``dest`` and return ``dest``.

    Every member is checked before anything is written: absolute names, ``..`` components,
    symlinks and names that would resolve outside ``dest`` raise :class:`DataError` naming the
    archive and the member. Extraction goes to a temporary directory next to ``dest`` which is
    then renamed onto it, so ``dest`` is either absent or complete. A complete ``dest`` carries
    a ``.complete`` marker; if it is already there, nothing is extracted (cache hit).
    A missing or non-zip ``zip_path`` raises :class:`DataError` naming the path.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    if (dest / COMPLETE_MARKER).is_file():
        return dest
    if not zip_path.is_file():
        raise DataError(f"{zip_path}: zip archive does not exist")
    if not zipfile.is_zipfile(zip_path):
        raise DataError(f"{zip_path}: not a zip archive")

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for info in members:
                _check_member(zip_path, dest, info)
            # A dest without the marker is a leftover of an interrupted run and is replaced; one that
            # another process completed meanwhile is as good as ours and is kept.
            with atomic_directory(dest, keep_existing=lambda d: (d / COMPLETE_MARKER).is_file()) as tmp:
                zf.extractall(tmp, members)
                (tmp / COMPLETE_MARKER).touch()
    except zipfile.BadZipFile as err:
        raise DataError(f"{zip_path}: corrupt zip archive ({err})") from err
    return dest


def _check_member(zip_path: Path, dest: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    # Zip names use '/', but archives made on Windows sometimes use '\\'; treat both as separators.
    parts = PurePosixPath(name.replace("\\", "/")).parts
    is_absolute = name.startswith(("/", "\\")) or (name[:1].isalpha() and name[1:2] == ":")
    if is_absolute:
        raise DataError(f"{zip_path}: refusing member with absolute path {name!r}")
    if ".." in parts:
        raise DataError(f"{zip_path}: refusing member with '..' in its path {name!r}")
    # The upper 16 bits of external_attr hold the Unix st_mode of the archived file.
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataError(f"{zip_path}: refusing symlink member {name!r}")
    root = dest.resolve()
    target = (root / Path(*parts)).resolve() if parts else root
    if not target.is_relative_to(root):
        raise DataError(f"{zip_path}: member {name!r} would be written outside {dest}")
