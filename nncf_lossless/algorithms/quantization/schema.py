"""The ``quantization`` entry's parameters (torch-free, so validating a config imports no torch).

``weights`` / ``activations`` take ``bits`` (below 8: low-bit QAT) and NNCF 2's ``mode``,
``per_channel`` and ``signed``, which become ``nncf.QuantizationParameters`` (``None``: NNCF's
choice for the target device). ``range_estimator`` picks one of NNCF's
``RangeEstimatorParametersSet`` for the activation ranges (``null``: NNCF's default).
``range_search: output_mse`` then shrinks each 8-bit activation range, in graph order, to the
factor whose model output is closest to the reference's (the search low-bit quantizers always get).
``weight_range_search: channel_mse`` instead starts low-bit *weight* quantizers from per-channel ranges
of least weight quantization error (the activations keep the output-MSE search).
``train_ranges: false`` keeps every quantizer's range where calibration put it: fine-tuning then
trains only the weights (NNCF's quantizers otherwise learn their scales along with them).
``batch_norm_adaptation`` re-estimates BatchNorm statistics with ``nncf.batch_norm_adaptation``
after calibration, as NNCF 2's ``initializer.batchnorm_adaptation`` did.
"""

from __future__ import annotations

from typing import Any

from nncf_lossless import registry
from nncf_lossless.algorithms.shared_params import BN_ADAPTATION_SCHEMA, IGNORED_SCOPE_SCHEMA, check_bn_adaptation

NAME = "quantization"
RANGE_ESTIMATORS = ["minmax", "mean_minmax", "median_minmax", "mean_no_outliers_minmax", "mean_quantile", "histogram"]

_TENSORS = {
    "type": "object", "additionalProperties": False, "default": {},
    "properties": {
        "bits": {"type": "integer", "minimum": 2, "maximum": 8, "default": 8},
        "mode": {"enum": ["symmetric", "asymmetric", None], "default": None},
        "per_channel": {"type": ["boolean", "null"], "default": None},
        "signed": {"type": ["boolean", "null"], "default": None},
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["algorithm"],
    "properties": {
        "algorithm": {"const": NAME},
        "preset": {"enum": ["performance", "mixed"], "default": "performance"},
        "target_device": {"enum": ["ANY", "CPU", "GPU", "NPU", "CPU_SPR"], "default": "ANY"},
        "subset_size": {"type": "integer", "minimum": 1, "default": 300},
        "fast_bias_correction": {"type": "boolean", "default": True},
        "model_type": {"enum": [None, "transformer"], "default": None},
        "ignored_scope": IGNORED_SCOPE_SCHEMA,
        "weights": _TENSORS,
        "activations": _TENSORS,
        "range_estimator": {"enum": [*RANGE_ESTIMATORS, None], "default": None},
        "range_search": {"enum": ["none", "output_mse"], "default": "none"},
        "weight_range_search": {"enum": ["output_mse", "channel_mse"], "default": "output_mse"},
        "batch_norm_adaptation": BN_ADAPTATION_SCHEMA,
        "match_openvino_cpu": {"type": "boolean", "default": True},
        "train_ranges": {"type": "boolean", "default": True},
        "overflow_fix": {"enum": ["enable", "first_layer_only", "disable"], "default": "first_layer_only"},
    },
}


def check(params: dict[str, Any]) -> None:
    check_bn_adaptation(params["batch_norm_adaptation"])


ENTRY = registry.register(registry.Entry(NAME, SCHEMA, "nncf_lossless.algorithms.quantization.algo:Quantization",
                                         stage=registry.Stage.QUANTIZATION, check=check))
