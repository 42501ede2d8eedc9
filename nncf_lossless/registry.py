"""The one registry of ``compression`` config entries.

Each entry names an algorithm (``{"algorithm": NAME, ...}`` in the config), the JSON Schema its
parameters must satisfy, a ``stage`` that orders how entries are applied to the model (pruning
masks go in before quantizers, loss-only entries last), and a ``build`` function that turns
validated parameters into an :class:`~nncf_lossless.algorithm.Algorithm`.

Other modules add entries with :func:`register`; the config validator and the controller only
ever look entries up here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nncf_lossless.algorithm import Algorithm


@dataclass(frozen=True)
class Entry:
    name: str
    schema: dict[str, Any]
    build: Callable[[dict[str, Any]], Algorithm]
    stage: int


_ENTRIES: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    """Adds ``entry``; a second entry with the same name is a programming error."""
    if entry.name in _ENTRIES:
        raise ValueError(f"compression entry {entry.name!r} is registered twice")
    _ENTRIES[entry.name] = entry
    return entry


def known() -> list[str]:
    _load_builtin_entries()
    return sorted(_ENTRIES)


def get(name: str) -> Entry | None:
    _load_builtin_entries()
    return _ENTRIES.get(name)


def _load_builtin_entries() -> None:
    # Imported lazily so that `import nncf_lossless.registry` stays cheap and cycle-free.
    import nncf_lossless.algorithms  # noqa: F401
