"""The ``hint_distillation`` entry's parameters (torch-free, so validating a config imports no torch)."""

from __future__ import annotations

from typing import Any

from nncf_lossless import registry
from nncf_lossless.algorithms.hint_distillation.similarity import METRICS

NAME = "hint_distillation"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["algorithm"],
    "properties": {
        "algorithm": {"const": NAME},
        "hint_points": {"oneOf": [{"const": "auto"}, {"type": "array", "minItems": 1, "items": {"type": "string"}}],
                        "default": "auto"},
        "num_points": {"type": "integer", "minimum": 1, "default": 3},
        "metric": {"enum": list(METRICS), "default": "linear_cka"},
        "samples": {"type": "integer", "minimum": 2, "default": 1000},
        "candidates": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "student_points": {"type": "object", "additionalProperties": {"type": "string"}, "default": {}},
        "weight": {"type": "number", "minimum": 0, "default": 1.0},
        "hints_only_epochs": {"type": "integer", "minimum": 0, "default": 0},
        "weight_after_hints": {"type": "number", "minimum": 0},
        "seed": {"type": "integer", "default": 0},
    },
}



ENTRY = registry.register(registry.Entry(NAME, SCHEMA, "nncf_lossless.algorithms.hint_distillation.algo:HintDistillation",
                                         stage=registry.Stage.LOSS))
