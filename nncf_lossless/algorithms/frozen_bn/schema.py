"""The ``frozen_bn`` entry's parameters (torch-free, so validating a config imports no torch)."""

from __future__ import annotations

from typing import Any

from nncf_lossless import registry
from nncf_lossless.algorithms.shared_params import BN_ADAPTATION_SCHEMA, check_bn_adaptation
from nncf_lossless.errors import ConfigError

NAME = "frozen_bn"
POINTS = ("at_epoch", "at_step", "at_fraction")

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["algorithm"],
    "properties": {
        "algorithm": {"const": NAME},
        # At most one of these; none means at_fraction 0.5 (no schema default, so one can be given).
        "at_epoch": {"type": "integer", "minimum": 0},
        "at_step": {"type": "integer", "minimum": 0},
        "at_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "freeze_affine": {"type": "boolean", "default": False},
        "batch_norm_adaptation": BN_ADAPTATION_SCHEMA,
    },
}


def check(params: dict[str, Any]) -> None:
    given = [k for k in POINTS if k in params]
    if len(given) > 1:
        raise ConfigError(f"{given[1]}: give only one of {', '.join(POINTS)} (also given: {given[0]})")
    check_bn_adaptation(params.get("batch_norm_adaptation", {}))


ENTRY = registry.register(registry.Entry(NAME, SCHEMA, "nncf_lossless.algorithms.frozen_bn.algo:FrozenBN",
                                         stage=registry.Stage.BATCH_NORM, check=check))
