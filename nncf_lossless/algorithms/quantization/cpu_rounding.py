"""Train with the arithmetic OpenVINO's CPU plugin executes: some activation quantizers only clamp.

The CPU plugin runs the FakeQuantize in front of a fused residual sum without rounding
(:mod:`nncf_lossless.algorithms.quantization.ov_cpu_fusion`). :func:`match_cpu_rounding` finds those quantizers in an
NNCF-quantized model, by converting it in memory and compiling it on the CPU, and gives each a
forward hook that replaces its output by the clamped, unrounded input while the model runs in
PyTorch. Export is untouched: under tracing the hook steps aside, so the IR still holds the
ordinary FakeQuantize and the CPU plugin applies its own optimisation to it. The effect: on a
CIFAR-10 ResNet-20 INT8 model, PyTorch-vs-IR top-1 disagreements fall from 71 to 14 per 10,000
(the rest are float rounding ties), and the PyTorch model is what the CPU runs.

On other devices (GPU, NPU), which round there, this moves the PyTorch model one rounding away;
the quantization entry's ``match_openvino_cpu: false`` turns it off.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import openvino as ov
import torch
from nncf.torch.quantization.layers import BaseQuantizer
from torch import nn
from torch.utils.hooks import RemovableHandle

from nncf_lossless.algorithms.quantization.ov_cpu_fusion import producer_key, unrounded_fake_quantizes
from nncf_lossless.algorithms.quantization.quantizer_sites import quantizer_sites


@dataclass
class CpuRounding:
    """The quantizers made to clamp only (by NNCF op name), and IR ops that matched no quantizer."""

    clamped: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    handles: list[RemovableHandle] = field(default_factory=list, repr=False)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def match_cpu_rounding(model: nn.Module, example_input: torch.Tensor) -> CpuRounding:
    """Hooks every activation quantizer of ``model`` that OpenVINO's CPU plugin runs unrounded."""
    from nncf_lossless.export.ir import compressed_to_openvino  # export imports the algorithms package

    # The IR as export writes it and a device reads it back: an in-memory model keeps conversion-time
    # rt_info that changes what the CPU fuses (a 4-bit model would run int8 here, f32 from its file).
    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(compressed_to_openvino(model, example_input), Path(tmp) / "m.xml", compress_to_fp16=False)
        ir = ov.Core().read_model(Path(tmp) / "m.xml")
    sites: dict[tuple[str, str], list] = {}
    for site in quantizer_sites(model, example_input):
        if not site.is_weight and site.name.startswith("post_hooks"):
            path, op, _call = site.op_name.rsplit("/", 2) if site.op_name.count("/") >= 2 else ("", site.op_name, "")
            sites.setdefault((path.replace("/", "."), op), []).append(site)
    result = CpuRounding()
    for fq in unrounded_fake_quantizes(ir):
        matches = sites.get(producer_key(fq), [])
        # An op called twice in one module gives two sites we cannot tell apart by name: leave both.
        if len(matches) != 1:
            result.unmatched.append(fq.input_value(0).get_node().get_friendly_name())
            continue
        result.clamped.append(matches[0].op_name)
        result.handles.append(matches[0].quantizer.register_forward_hook(_clamp_only))
    return result


def _clamp_only(quantizer: BaseQuantizer, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    if torch.jit.is_tracing() or not quantizer.is_enabled_quantization():
        return None
    low, high = quantizer.get_input_low_input_high()
    # low/high are functions of the trainable range, so the range still learns from clipped values.
    return torch.minimum(torch.maximum(args[0], low), high)
