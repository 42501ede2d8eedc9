"""Minimal reproduction: NNCF 3.4 exports a narrow-range weight quantizer with the full range.

A 4-bit narrow-range symmetric quantizer (the kind NNCF puts on weights) clamps to levels -7..7
in its forward. Traced for export (``ov.convert_model``), it emits a FakeQuantize over -8..7 with
the same step, so a value below the range becomes -8 steps in the IR where PyTorch gives -7.
QAT moves weights past their ranges, so this changes deployed outputs. ``nncf.strip`` avoids it
by baking weights, but only for 8 bits; nncf-lossless bakes low-bit weights itself
(``export._bake_weights``). Run: ``python bench/repro_nncf_narrow_range_export.py``.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import torch
from nncf.common.quantization.structs import QuantizationScheme
from nncf.torch.quantization.layers import PTQuantizerSpec, SymmetricQuantizer


class QuantizedConstant(torch.nn.Module):
    def __init__(self, quantizer: SymmetricQuantizer, value: torch.Tensor) -> None:
        super().__init__()
        self.quantizer, self.value = quantizer, torch.nn.Parameter(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.quantizer(self.value)


def main() -> None:
    spec = PTQuantizerSpec(num_bits=4, mode=QuantizationScheme.SYMMETRIC, signedness_to_force=True, narrow_range=True,
                           half_range=False, scale_shape=(1,), logarithm_scale=False)
    quantizer = SymmetricQuantizer(spec)
    quantizer.scale.data.fill_(1.0)  # step 1/7: levels -7/7 ... 7/7
    values = torch.tensor([-1.3, -1.0, 0.5, 1.0, 1.3])
    model = QuantizedConstant(quantizer, values).eval()
    with torch.no_grad():
        torch_out = model(torch.ones(1)).numpy()
        ir = ov.convert_model(model, example_input=torch.ones(1))
    ir_out = ov.Core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(np.ones(1, np.float32))[0]
    print("value          ", values.numpy())
    print("PyTorch levels ", np.round(torch_out * 7).astype(int))
    print("IR levels      ", np.round(ir_out * 7).astype(int))
    print("differs:", bool(np.abs(torch_out - ir_out).max() > 1e-6))


if __name__ == "__main__":
    main()
