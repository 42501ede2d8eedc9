"""The one registry of ``compression`` config entries, and how plugins add to it.

Each entry names an algorithm (``{"algorithm": NAME, ...}`` in the config), the JSON Schema its
parameters must satisfy, a :class:`Stage` that orders how entries are applied to the model (pruning
masks go in before quantizers, loss-only entries last), an optional ``check`` of the cross-field
rules a schema cannot state, and ``build``, which turns validated parameters into an
:class:`~nncf_lossless.algorithm.Algorithm`.

``build`` may be given as ``"package.module:Class"``: it is imported only when a model is
compressed, so validating a config (``nncf-lossless validate-config``) imports neither torch nor
NNCF. The built-in entries register from ``nncf_lossless/algorithms/<method>/schema.py``, which
is torch-free for that reason.

Third-party packages add entries through the entry-point group ``nncf_lossless.algorithms``
(:data:`ENTRY_POINT_GROUP`); each entry point names a module that calls :func:`register` when
imported, or an :class:`Entry` (or a list of them), or a function returning either. They are
loaded at the first lookup; a plugin that fails to load is a one-line :class:`ConfigError`
naming it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from nncf_lossless.errors import ConfigError

if TYPE_CHECKING:
    from nncf_lossless.algorithm import Algorithm

ENTRY_POINT_GROUP = "nncf_lossless.algorithms"


class Stage(IntEnum):
    """When an entry is applied, lowest first. Any integer works; these name the built-in slots.

    - ``INIT`` (5): changes the starting weights before anything calibrates on them
      (distillation scheme B re-initialises the student);
    - ``PRUNING`` (10): inserts pruning masks (quantizers then calibrate on the pruned weights);
    - ``QUANTIZATION`` (20): inserts and calibrates quantizers;
    - ``BATCH_NORM`` (30): schedules BatchNorm changes on the compressed model (``frozen_bn``);
    - ``LOSS`` (40): adds loss terms only, after the model has its final structure.
    """

    INIT = 5
    PRUNING = 10
    QUANTIZATION = 20
    BATCH_NORM = 30
    LOSS = 40


@dataclass(frozen=True)
class Entry:
    name: str
    schema: dict[str, Any]
    build: Callable[[dict[str, Any]], Algorithm] | str
    stage: int = Stage.LOSS
    # Cross-field rules (raise ConfigError, message relative to the entry). Without one, validation
    # calls ``build`` instead, which must then be cheap and torch-free only if ``build`` is.
    check: Callable[[dict[str, Any]], None] | None = None

    def builder(self) -> Callable[[dict[str, Any]], Algorithm]:
        """``build``, imported first if it was given as ``"module:attr"``."""
        if not isinstance(self.build, str):
            return self.build
        module, _, attr = self.build.partition(":")
        return getattr(importlib.import_module(module), attr)

    def validate(self, params: dict[str, Any]) -> None:
        if self.check is not None:
            self.check(params)
        elif not isinstance(self.build, str):
            self.build(params)


_ENTRIES: dict[str, Entry] = {}
_LOADED = False


def register(entry: Entry) -> Entry:
    """Adds ``entry``; a second entry with the same name is a programming error."""
    if entry.name in _ENTRIES:
        raise ValueError(f"compression entry {entry.name!r} is registered twice")
    _ENTRIES[entry.name] = entry
    return entry


def known() -> list[str]:
    _load_entries()
    return sorted(_ENTRIES)


def get(name: str) -> Entry | None:
    _load_entries()
    return _ENTRIES.get(name)


def plugins() -> dict[str, str]:
    """The installed plugins' entry points: name -> ``module[:attr]``."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_entries() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    # Imported lazily so that `import nncf_lossless.registry` stays cheap and cycle-free.
    import nncf_lossless.algorithms  # noqa: F401

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            _register_loaded(ep.load())
        except Exception as err:  # any failure of third-party code is that plugin's
            _LOADED = False  # report it again on the next lookup rather than run without it
            detail = " ".join(str(err).split()) or type(err).__name__
            raise ConfigError(f"plugin {ep.name!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP}) "
                              f"failed to load: {detail}") from err


def _register_loaded(obj: Any) -> None:
    if callable(obj) and not isinstance(obj, type) and not hasattr(obj, "__path__") and not isinstance(obj, Entry):
        obj = obj()
    for item in obj if isinstance(obj, (list, tuple)) else [obj]:
        if isinstance(item, Entry) and _ENTRIES.get(item.name) is not item:
            register(item)
