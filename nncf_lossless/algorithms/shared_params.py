"""Config parameters several entries share: ``ignored_scope`` (NNCF 2's spelling, mapped to
``nncf.IgnoredScope``) and ``batch_norm_adaptation`` (``nncf.batch_norm_adaptation``)."""

from __future__ import annotations

from typing import Any

import nncf

IGNORED_SCOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "names": {"type": "array", "items": {"type": "string"}},
        "patterns": {"type": "array", "items": {"type": "string"}},
        "types": {"type": "array", "items": {"type": "string"}},
        "validate": {"type": "boolean", "default": True},
    },
}


def to_ignored_scope(params: dict[str, Any] | None) -> nncf.IgnoredScope | None:
    if not params:
        return None
    return nncf.IgnoredScope(
        names=list(params.get("names", [])),
        patterns=list(params.get("patterns", [])),
        types=list(params.get("types", [])),
        validate=params.get("validate", True),
    )


# nncf.batch_norm_adaptation, as entries that re-estimate BatchNorm statistics offer it.
BN_ADAPTATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "default": {},
    "properties": {"enabled": {"type": "boolean", "default": False},
                   "num_iterations": {"type": ["integer", "null"], "minimum": 1, "default": None}},
}
