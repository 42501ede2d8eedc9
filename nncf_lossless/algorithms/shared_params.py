"""Config parameters several entries share: ``ignored_scope`` (NNCF 2's spelling, mapped to
``nncf.IgnoredScope``) and ``batch_norm_adaptation`` (``nncf.batch_norm_adaptation``).

The schemas are torch-free (config validation imports this module); NNCF is imported only by
the functions that build NNCF objects.
"""

from __future__ import annotations

from typing import Any

from nncf_lossless.errors import ConfigError

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


def to_ignored_scope(params: dict[str, Any] | None):  # -> nncf.IgnoredScope | None
    if not params:
        return None
    import nncf

    return nncf.IgnoredScope(
        names=list(params.get("names", [])),
        patterns=list(params.get("patterns", [])),
        types=list(params.get("types", [])),
        validate=params.get("validate", True),
    )


# nncf.batch_norm_adaptation, as entries that re-estimate BatchNorm statistics offer it. The
# length is given in batches (num_iterations) or, as NNCF 2 counted it, in samples (num_samples).
BN_ADAPTATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "default": {},
    "properties": {"enabled": {"type": "boolean", "default": False},
                   "num_iterations": {"type": ["integer", "null"], "minimum": 1, "default": None},
                   "num_samples": {"type": ["integer", "null"], "minimum": 1, "default": None}},
}


def check_bn_adaptation(params: dict[str, Any]) -> None:
    if params.get("num_iterations") is not None and params.get("num_samples") is not None:
        raise ConfigError("batch_norm_adaptation: give num_iterations (batches) or num_samples, not both")


def bn_adaptation_iterations(params: dict[str, Any], data: Any) -> int | None:
    """``num_iterations`` for ``nncf.batch_norm_adaptation``: given, or ``num_samples`` over the loader's batch size."""
    if params.get("num_samples") is None:
        return params.get("num_iterations")
    return batches_for(params["num_samples"], data)


def batches_for(samples: int, data: Any) -> int:
    """NNCF counts dataset items; ours are batches, while NNCF 2's sizes count samples."""
    batch_size = getattr(data, "batch_size", None) or 1
    return max(1, -(-samples // batch_size))
