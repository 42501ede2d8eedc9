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
from nncf.common.quantization.structs import QuantizationScheme
from nncf.quantization.advanced_parameters import QuantizationParameters
from nncf.quantization.range_estimator import RangeEstimatorParametersSet
from nncf.torch.quantization.layers import BaseQuantizer
from torch import nn

from nncf_lossless.algorithm import AlgorithmBase, CompressionContext
from nncf_lossless.algorithms.quantization import low_bit
from nncf_lossless.algorithms.quantization.cpu_rounding import CpuRounding, match_cpu_rounding
from nncf_lossless.algorithms.quantization.schema import SCHEMA  # noqa: F401 (re-exported)
from nncf_lossless.algorithms.shared_params import batches_for, bn_adaptation_iterations, to_ignored_scope
from nncf_lossless.errors import ConfigError


@dataclass
class Quantization(AlgorithmBase):
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
                subset_size=batches_for(p["subset_size"], ctx.calibration_data),
                fast_bias_correction=p["fast_bias_correction"],
                model_type=nncf.ModelType(p["model_type"]) if p["model_type"] else None,
                ignored_scope=to_ignored_scope(p.get("ignored_scope")),
                advanced_parameters=_advanced(p, overflow_fix),
            )
        except nncf.ValidationError as err:
            # NNCF's message for an ignored_scope naming nodes that do not exist; keep it on one line.
            raise ConfigError("ignored_scope: " + " ".join(str(err).split())) from err
        except ValueError as err:
            if "fast_bias_correction" in str(err):  # NNCF 3.4's torch backend has only the fast variant
                raise ConfigError(f"fast_bias_correction: NNCF {nncf.__version__} quantizes PyTorch models "
                                  f"only with fast bias correction; set it to true") from err
            if "incompatible" not in str(err):
                raise
            # E.g. activations.per_channel: true, which no NNCF hardware config allows; one line, not a traceback.
            where = str(err).rsplit("location:", 1)[-1].strip() if "location:" in str(err) else "?"
            raise ConfigError(f"weights/activations: NNCF's hardware config for target_device {p['target_device']} "
                              f"does not allow these quantizer parameters (first conflict at {where})") from err
        low_bit.set_bits(
            model,
            ctx.reference,
            ctx.example_input,
            dataset.get_inference_data(),
            weight_bits=p["weights"]["bits"],
            activation_bits=p["activations"]["bits"],
            weight_search=p["weight_range_search"],
        )
        if p["range_search"] == "output_mse" and p["activations"]["bits"] == 8:  # low bits were searched just above
            low_bit.search_activation_ranges(model, ctx.reference, ctx.example_input, dataset.get_inference_data(), 8)
        bn = p["batch_norm_adaptation"]
        if bn["enabled"]:
            nncf.batch_norm_adaptation(model, dataset, num_iterations=bn_adaptation_iterations(bn, ctx.calibration_data))
        return model

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None:
        self.model = model
        # Found again from the graph on every attach (fresh or restored), so there is no state to keep.
        self.cpu_rounding.remove()
        if self.params.get("match_openvino_cpu", True):
            self.cpu_rounding = match_cpu_rounding(model, ctx.example_input)
        if not self.params.get("train_ranges", True):
            for module in model.modules():
                if isinstance(module, BaseQuantizer):
                    module.disable_gradients()  # no gradient, so no optimizer step or weight decay either

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


def _advanced(p: dict[str, Any], overflow_fix: nncf.OverflowFix) -> nncf.AdvancedQuantizationParameters:
    """NNCF's advanced parameters: overflow fix, per-tensor-kind quantizer constraints, range estimator."""
    kinds = {}
    for kind in ("weights", "activations"):
        q = p[kind]
        kinds[f"{kind}_quantization_params"] = QuantizationParameters(
            mode=QuantizationScheme(q["mode"]) if q.get("mode") else None,
            per_channel=q.get("per_channel"), signedness_to_force=q.get("signed"))
    ranges = {}
    if p.get("range_estimator"):
        ranges["activations_range_estimator_params"] = getattr(RangeEstimatorParametersSet, p["range_estimator"].upper())
    return nncf.AdvancedQuantizationParameters(overflow_fix=overflow_fix, **kinds, **ranges)
