"""The ``label_preserving_distillation`` entry's parameters (torch-free, so validating a config imports no torch)."""

from __future__ import annotations

from typing import Any

from nncf_lossless import registry
from nncf_lossless.errors import ConfigError

NAME = "label_preserving_distillation"
TERMS = ("label_ce", "kd", "teacher_ce", "margin", "mse")
# Apprentice's a=1 (teacher CE, scheme A only), b=0.5 (label CE), c=0.5 (distillation).
DEFAULT_WEIGHTS = {"label_ce": 0.5, "kd": 0.5, "teacher_ce": 0.0, "margin": 0.0, "mse": 0.0, "teacher": 1.0}
_WEIGHT = {"type": "number", "minimum": 0}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["algorithm"],
    "properties": {
        "algorithm": {"const": NAME},
        "scheme": {"enum": ["A", "B", "C"], "default": "C"},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 4.0},
        # Lead (in logits) the teacher's top-1 class should keep over the runner-up, for `margin`.
        "margin_gap": {"type": "number", "minimum": 0, "default": 1.0},
        "weights": {
            "default": {},
            "oneOf": [
                {"const": "auto"},
                {"type": "object", "additionalProperties": False,
                 "properties": {k: {**_WEIGHT, "default": v} for k, v in DEFAULT_WEIGHTS.items()}},
            ],
        },
        "teacher_cache": {"type": "boolean", "default": False},
        # "teacher": no term reads the ground truth (label_ce 0); "labels": the weights decide.
        "targets": {"enum": ["labels", "teacher"], "default": "labels"},
        "focal": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {"alpha": {**_WEIGHT, "default": 1.0}, "beta": {**_WEIGHT, "default": 0.0}},
        },
        "mix": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                "mode": {"enum": ["none", "mixup", "cutmix", "boundary"], "default": "none"},
                "fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
                "alpha": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
            },
        },
        "auto": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                "trials": {"type": "integer", "minimum": 1, "default": 12},
                "epochs_per_trial": {"type": "integer", "minimum": 1, "default": 1},
                # Held out of the training split (never the test set) to score trials.
                "validation_fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.2},
                # Trials fine-tune on this many of the remaining training samples (a fixed random
                # subset; null: all of them): on a large dataset a trial then costs a fraction of an epoch.
                "train_samples": {"type": ["integer", "null"], "minimum": 1, "default": None},
                "max_temperature": {"type": "number", "minimum": 1, "default": 8.0},
            },
        },
    },
}


def effective_weights(params: dict[str, Any]) -> dict[str, float]:
    """The term weights a dict ``weights`` means: defaults filled in, ``label_ce`` 0 by default with ``targets: "teacher"``."""
    weights = {**DEFAULT_WEIGHTS, **params["weights"]}
    if params.get("targets") == "teacher" and "label_ce" not in params["weights"]:
        weights["label_ce"] = 0.0
    return weights


def check(params: dict[str, Any]) -> None:
    mixing = params.get("mix", {}).get("mode", "none") != "none"
    if mixing and params.get("scheme") == "A":
        raise ConfigError("mix: not with scheme 'A', whose teacher term is CE on the (unmixed) labels")
    if params.get("teacher_cache") and params.get("scheme") == "A":
        raise ConfigError("teacher_cache: cannot cache the teacher's outputs with scheme 'A', which trains the teacher")
    if isinstance(params.get("weights"), dict):
        weights = effective_weights(params)
        if weights["label_ce"] and params.get("targets") == "teacher":
            raise ConfigError('weights.label_ce: must be 0 with targets: "teacher" (no term may read the ground truth)')
        if weights["label_ce"] and mixing:
            raise ConfigError("weights.label_ce: must be 0 with mix (mixed inputs have no label)")
        if not any(weights[t] for t in TERMS):
            raise ConfigError(f"weights: every student term ({', '.join(TERMS)}) is zero; nothing would be trained")


# Stage INIT: before pruning and quantization, so scheme B re-initialises the student before they
# calibrate; for schemes A and C apply() changes nothing.
ENTRY = registry.register(registry.Entry(NAME, SCHEMA, "nncf_lossless.algorithms.distillation.algo:Distillation",
                                         stage=registry.Stage.INIT, check=check))
