"""Minimal reproduction: OpenVINO's int8 path requantizes a residual Add differently from FakeQuantize.

ResNet's residual block, as NNCF quantizes it: two branches, each a convolution (int8 weights, u8
input) whose output goes through a *signed* 8-bit FakeQuantize, are added, and the sum goes
through another FakeQuantize. With OpenVINO's low-precision transformations on (the CPU default),
about 8% of the outputs of that last FakeQuantize land one quantization step away from what
FakeQuantize arithmetic gives (a float64 NumPy reference, and OpenVINO itself with
``LP_TRANSFORMS_MODE`` off, agree to within a few rounding ties). Without the FakeQuantize after the
Add, both modes agree exactly.

The cause: the plugin fuses the first branch's FakeQuantize, the Add and the last FakeQuantize into
that branch's convolution and runs the branch's FakeQuantize without rounding (``Convolution::
setPostOps``: "drop rounding one special residual pattern"). The last line checks exactly that: a
NumPy model that only clamps that branch matches OpenVINO's int8 output. nncf-lossless trains with
the same arithmetic (``match_openvino_cpu``; README, known issues).

Run: ``python bench/repro_openvino_lpt_residual_add.py``.
"""

from __future__ import annotations

import itertools

import numpy as np
import openvino as ov
import openvino.opset13 as ops

RNG = np.random.default_rng(0)
N, C, H = 32, 16, 16
SIGNED_HIGH = 2.0
SIGNED_LOW = -SIGNED_HIGH * 128 / 127  # NNCF's signed 8-bit activation range
OUT_HIGH = 4.0


def const(value) -> ov.Node:
    return ops.constant(np.array(value, np.float32))


def fake_quantize(node, low, high, levels=256):
    return ops.fake_quantize(node, const(low), const(high), const(low), const(high), levels)


def fake_quantize_np(v, low, high, levels=256):
    scale = (levels - 1) / (high - low)
    return np.round((np.clip(v, low, high) - low) * scale) / scale + low


def conv_np(x, w):
    n, _, h, _ = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, h))
    for i, j in itertools.product(range(3), range(3)):
        out += np.einsum("nchw,kc->nkhw", padded[:, :, i : i + h, j : j + h], w[:, :, i, j])
    return out


def main() -> None:
    x = np.abs(RNG.normal(size=(N, C, H, H))).astype(np.float32)
    step_w = (RNG.uniform(0.5, 1.0, size=(C, 1, 1, 1)) / 127 / 4).astype(np.float32)
    weights = [(RNG.integers(-127, 128, size=(C, C, 3, 3)) * step_w).astype(np.float32) for _ in range(2)]
    biases = [(RNG.normal(size=(1, C, 1, 1)) * s).astype(np.float32) for s in (0.1, 0.05)]

    def branch(a, w, b):
        wq = ops.fake_quantize(ops.constant(w), const(-127 * step_w), const(127 * step_w),
                               const(-127 * step_w), const(127 * step_w), 255)
        conv = ops.convolution(a, wq, [1, 1], [1, 1], [1, 1], [1, 1])
        return fake_quantize(ops.add(conv, const(b)), SIGNED_LOW, SIGNED_HIGH)

    def build(requantize: bool) -> ov.Model:
        p = ops.parameter([N, C, H, H], np.float32)
        a = fake_quantize(p, 0.0, 3.0)
        y = ops.add(branch(a, weights[0], biases[0]), branch(a, weights[1], biases[1]))
        if requantize:
            y = fake_quantize(y, 0.0, OUT_HIGH)
        return ov.Model([ops.multiply(y, const(1.0))], [p])

    a_np = fake_quantize_np(x.astype(np.float64), 0.0, 3.0)
    y_np = sum(fake_quantize_np(conv_np(a_np, w.astype(np.float64)) + b, SIGNED_LOW, SIGNED_HIGH)
               for w, b in zip(weights, biases))
    step = OUT_HIGH / 255
    unrounded_branch = fake_quantize_np(
        np.clip(conv_np(a_np, weights[0].astype(np.float64)) + biases[0], SIGNED_LOW, SIGNED_HIGH)
        + fake_quantize_np(conv_np(a_np, weights[1].astype(np.float64)) + biases[1], SIGNED_LOW, SIGNED_HIGH),
        0.0, OUT_HIGH)
    for requantize in (True, False):
        expected = fake_quantize_np(y_np, 0.0, OUT_HIGH) if requantize else y_np
        for lp in (True, False):
            props = {"INFERENCE_PRECISION_HINT": "f32", "EXECUTION_MODE_HINT": "ACCURACY", "LP_TRANSFORMS_MODE": lp}
            out = ov.Core().compile_model(build(requantize), "CPU", props)(x)[0]
            off = int((np.abs(out - expected) >= step / 2).sum())
            print(f"FakeQuantize after the Add: {requantize!s:5}  LP_TRANSFORMS_MODE {lp!s:5}: "
                  f"{off} of {out.size} outputs a step or more from FakeQuantize arithmetic")
            if requantize and lp:
                off = int((np.abs(out - unrounded_branch) >= step / 2).sum())
                print(f"  the same against FakeQuantize arithmetic without rounding in the fused branch: {off} of {out.size}")


if __name__ == "__main__":
    main()
