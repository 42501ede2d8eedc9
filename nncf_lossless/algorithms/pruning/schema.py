"""The ``pruning`` entry's parameters (torch-free, so validating a config imports no torch)."""

from __future__ import annotations

from typing import Any

from nncf_lossless import registry
from nncf_lossless.algorithms.shared_params import BN_ADAPTATION_SCHEMA, IGNORED_SCOPE_SCHEMA, check_bn_adaptation
from nncf_lossless.errors import ConfigError

NAME = "pruning"
MODES = ["UNSTRUCTURED_MAGNITUDE_LOCAL", "UNSTRUCTURED_MAGNITUDE_GLOBAL", "UNSTRUCTURED_REGULARIZATION_BASED"]
_RATIO = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["algorithm"],
    "properties": {
        "algorithm": {"const": NAME},
        "mode": {"enum": MODES, "default": "UNSTRUCTURED_MAGNITUDE_LOCAL"},
        "ratio": {**_RATIO, "default": 0.5},
        "ignored_scope": IGNORED_SCOPE_SCHEMA,
        "schedule": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                "type": {"enum": ["constant", "multistep", "exponential"], "default": "constant"},
                # multistep: {"<epoch>": ratio}; must include "0".
                "steps": {"type": "object", "patternProperties": {"^[0-9]+$": _RATIO}, "additionalProperties": False,
                          "required": ["0"]},
                # exponential: from initial_ratio at epoch 0 to `ratio` at target_epoch.
                "initial_ratio": {**_RATIO, "default": 0.0},
                "target_epoch": {"type": "integer", "minimum": 1, "default": 1},
            },
            "if": {"properties": {"type": {"const": "multistep"}}, "required": ["type"]},
            "then": {"required": ["steps"]},
        },
        "rb": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {"p": {"type": "number", "exclusiveMinimum": 0, "default": 0.05},
                           "weight": {"type": "number", "minimum": 0, "default": 1.0}},
        },
        "batch_norm_adaptation": BN_ADAPTATION_SCHEMA,
    },
}


def check(params: dict[str, Any]) -> None:
    schedule = params["schedule"]
    if schedule["type"] == "exponential" and schedule["initial_ratio"] >= params["ratio"]:
        raise ConfigError(f"schedule.initial_ratio: {schedule['initial_ratio']} must be below ratio {params['ratio']}")
    check_bn_adaptation(params["batch_norm_adaptation"])


ENTRY = registry.register(registry.Entry(NAME, SCHEMA, "nncf_lossless.algorithms.pruning.algo:Pruning",
                                         stage=registry.Stage.PRUNING, check=check))
