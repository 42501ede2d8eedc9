"""The ``multi_bit`` entry's parameters (torch-free, so validating a config imports no torch)."""

from __future__ import annotations

from typing import Any

from nncf_lossless import registry
from nncf_lossless.algorithms.quantization.schema import SCHEMA as QUANTIZATION_SCHEMA
from nncf_lossless.algorithms.shared_params import BN_ADAPTATION_SCHEMA, check_bn_adaptation

# Teacher rules of losses.py (kept here as literals so this module stays torch-free).
TEACHER_RULES = ("adaptive", "reference", "next_higher")
# Range-search samples by default: low_bit.SEARCH_SAMPLES.
DEFAULT_RANGE_SEARCH_SAMPLES = 256

NAME = "multi_bit"
_QUANTIZATION_KEYS = ("preset", "target_device", "subset_size", "fast_bias_correction", "model_type", "ignored_scope",
                      "match_openvino_cpu", "overflow_fix")
DEFAULT_WEIGHTS = {"label_ce": 0.5, "kd": 0.5}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["algorithm"],
    "properties": {
        "algorithm": {"const": NAME},
        "bits": {"type": "array", "items": {"type": "integer", "minimum": 2, "maximum": 8}, "minItems": 1,
                 "uniqueItems": True, "default": [8, 6, 4, 2]},
        # null: activations at each bit-width's weight bits (W4A4 ...); an integer fixes them for all.
        "activation_bits": {"type": ["integer", "null"], "minimum": 2, "maximum": 8, "default": None},
        "bits_per_step": {"type": ["integer", "null"], "minimum": 1, "default": None},
        "teacher": {"enum": list(TEACHER_RULES), "default": "adaptive"},
        "weights": {"type": "object", "additionalProperties": False, "default": {},
                    "properties": {k: {"type": "number", "minimum": 0, "default": v} for k, v in DEFAULT_WEIGHTS.items()}},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 4.0},
        "block_swap": {
            "type": "object", "additionalProperties": False, "default": {},
            "properties": {
                "probability": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
                "until_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
                # Module names; default: the model's top-level children, containers split (ResNet: its BasicBlocks).
                "blocks": {"type": ["array", "null"], "items": {"type": "string"}, "default": None},
            },
        },
        "seed": {"type": "integer", "minimum": 0, "default": 0},
        # Calibration samples the lower bit-widths' range search scores on (it re-runs the model per factor).
        "range_search_samples": {"type": "integer", "minimum": 1, "default": DEFAULT_RANGE_SEARCH_SAMPLES},
        # nncf.batch_norm_adaptation at each lower bit-width after its ranges are initialised.
        "batch_norm_adaptation": BN_ADAPTATION_SCHEMA,
        **{k: QUANTIZATION_SCHEMA["properties"][k] for k in _QUANTIZATION_KEYS},
    },
}


def check(params: dict[str, Any]) -> None:
    check_bn_adaptation(params["batch_norm_adaptation"])


# Stage QUANTIZATION, as quantization: after pruning's masks, before frozen_bn finds the BN layers.
ENTRY = registry.register(registry.Entry(NAME, SCHEMA, "nncf_lossless.algorithms.multi_bit.algo:MultiBit",
                                         stage=registry.Stage.QUANTIZATION, check=check))
