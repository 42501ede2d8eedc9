"""The ``quantization`` entry: NNCF 3 post-training quantization, then fine-tuning (QAT).

``nncf.quantize`` inserts NNCF's trainable FakeQuantize modules and calibrates their ranges; the
trainer (or the user's loop) then fine-tunes weights and ranges together. ``weights.bits`` /
``activations.bits`` below 8 switch the quantizers to low-bit after calibration
(:mod:`nncf_lossless.algorithms.quantization.low_bit`).

``match_openvino_cpu`` (default on) makes the activation quantizers that OpenVINO's CPU plugin
runs without rounding clamp-only in PyTorch too (:mod:`nncf_lossless.algorithms.quantization.cpu_rounding`), so
the model trained and measured is the one the CPU executes.

``overflow_fix`` is NNCF's: x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake) multiply
u8 x s8 pairs into a saturating int16, so an INT8 IR can give other labels there than on a VNNI
CPU or in PyTorch. ``"enable"`` quantizes every 8-bit weight to half its range (7 bits), which
cannot saturate; NNCF's default fixes only the first layer. It does nothing below 8 bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nncf
import torch
from nncf.torch.quantization.layers import BaseQuantizer
from torch import nn

from nncf_lossless import registry
from nncf_lossless.algorithm import CompressionContext
from nncf_lossless.algorithms.quantization import low_bit
from nncf_lossless.algorithms.quantization.cpu_rounding import CpuRounding, match_cpu_rounding
from nncf_lossless.algorithms.shared_params import IGNORED_SCOPE_SCHEMA, to_ignored_scope
from nncf_lossless.errors import ConfigError

_BITS = {"type": "object", "additionalProperties": False, "default": {},
         "properties": {"bits": {"type": "integer", "minimum": 2, "maximum": 8, "default": 8}}}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["algorithm"],
    "properties": {
        "algorithm": {"const": "quantization"},
        "preset": {"enum": ["performance", "mixed"], "default": "performance"},
        "target_device": {"enum": ["ANY", "CPU", "GPU", "NPU", "CPU_SPR"], "default": "ANY"},
        "subset_size": {"type": "integer", "minimum": 1, "default": 300},
        "fast_bias_correction": {"type": "boolean", "default": True},
        "model_type": {"enum": [None, "transformer"], "default": None},
        "ignored_scope": IGNORED_SCOPE_SCHEMA,
        "weights": _BITS,
        "activations": _BITS,
        "match_openvino_cpu": {"type": "boolean", "default": True},
        "overflow_fix": {"enum": ["enable", "first_layer_only", "disable"], "default": "first_layer_only"},
    },
}


@dataclass
class Quantization:
    params: dict[str, Any]
    name: str = "quantization"
    model: nn.Module | None = field(default=None, repr=False)
    cpu_rounding: CpuRounding = field(default_factory=CpuRounding, repr=False)

    def apply(self, model: nn.Module, ctx: CompressionContext) -> nn.Module:
        dataset = ctx.nncf_dataset("algorithm: quantization")
        p = self.params
        int8 = p["weights"]["bits"] == 8 and p["activations"]["bits"] == 8
        overflow_fix = nncf.OverflowFix(p["overflow_fix"] if int8 else "disable")
        try:
            model = nncf.quantize(
                model,
                dataset,
                preset=nncf.QuantizationPreset(p["preset"]),
                target_device=nncf.TargetDevice[p["target_device"]],
                subset_size=_items_for(p["subset_size"], ctx.calibration_data),
                fast_bias_correction=p["fast_bias_correction"],
                model_type=nncf.ModelType(p["model_type"]) if p["model_type"] else None,
                ignored_scope=to_ignored_scope(p.get("ignored_scope")),
                advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=overflow_fix),
            )
        except nncf.ValidationError as err:
            # NNCF's message for an ignored_scope naming nodes that do not exist; keep it on one line.
            raise ConfigError("ignored_scope: " + " ".join(str(err).split())) from err
        low_bit.set_bits(
            model,
            ctx.reference,
            ctx.example_input,
            dataset.get_inference_data(),
            weight_bits=p["weights"]["bits"],
            activation_bits=p["activations"]["bits"],
        )
        return model

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None:
        self.model = model
        # Found again from the graph on every attach (fresh or restored), so there is no state to keep.
        self.cpu_rounding.remove()
        if self.params.get("match_openvino_cpu", True):
            self.cpu_rounding = match_cpu_rounding(model, ctx.example_input)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor | None, inputs: torch.Tensor | None) -> None:
        return None

    def step(self) -> None:
        pass

    def epoch_step(self) -> None:
        pass

    def statistics(self) -> dict[str, Any]:
        bits: dict[int, int] = {}
        for module in self.model.modules() if self.model is not None else []:
            if isinstance(module, BaseQuantizer):
                bits[module.num_bits] = bits.get(module.num_bits, 0) + 1
        return {
            "num_quantizers": sum(bits.values()),
            "quantizers_by_bits": {str(b): n for b, n in sorted(bits.items())},
            "weights_bits": self.params["weights"]["bits"],
            "activations_bits": self.params["activations"]["bits"],
            "clamp_only_on_cpu": list(self.cpu_rounding.clamped),
            "clamp_only_unmatched": list(self.cpu_rounding.unmatched),
        }

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _items_for(samples: int, data: Any) -> int:
    """NNCF counts dataset items; ours are batches, while ``subset_size`` counts samples as in NNCF 2."""
    batch_size = getattr(data, "batch_size", None) or 1
    return max(1, -(-samples // batch_size))


registry.register(registry.Entry("quantization", SCHEMA, Quantization, stage=20))
