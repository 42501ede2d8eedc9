"""``ignored_scope`` in the config, as NNCF 2 spelled it, mapped to ``nncf.IgnoredScope``."""

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
