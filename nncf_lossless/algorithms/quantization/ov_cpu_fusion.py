"""Which FakeQuantize ops OpenVINO's CPU plugin executes without their rounding step.

When the CPU plugin fuses a residual block into one convolution (conv -> FakeQuantize -> Add of
the skip branch -> ... -> FakeQuantize), it drops the rounding of the *first* FakeQuantize, as an
optimisation its own source marks "drop rounding one special residual pattern / TODO: validate
this unsafe optimization" (``Convolution::setPostOps`` in ``intel_cpu/src/nodes/conv.cpp``). That
quantizer then only clamps. A PyTorch model that rounds there gives a different label on ~0.5% of
CIFAR-10 images (``bench/repro_openvino_lpt_residual_add.py``). This module reads the compiled
model to find those ops, so training can do the same (:mod:`nncf_lossless.algorithms.quantization.cpu_rounding`).

Torch-free: it needs only OpenVINO.
"""

from __future__ import annotations

import openvino as ov

# The mode the checker treats as the truth for the CPU; fusion does not depend on the precision hint.
_STRICT = {"INFERENCE_PRECISION_HINT": "f32", "EXECUTION_MODE_HINT": "ACCURACY"}


def unrounded_fake_quantizes(model: ov.Model, core: ov.Core | None = None) -> list[ov.Node]:
    """The FakeQuantize nodes of ``model`` that the CPU plugin runs as a clamp without rounding.

    Returns nodes of ``model`` itself (not of the compiled graph), in execution order.
    """
    core = core or ov.Core()
    compiled = core.compile_model(model, "CPU", _STRICT)
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    found = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) != "Convolution":
            continue
        fused = [by_name.get(name) for name in info["originalLayersNames"].astype(str).split(",")]
        kinds = [node.get_type_name() if node is not None else "" for node in fused]
        if "FakeQuantize" not in kinds:
            continue
        first_fq = kinds.index("FakeQuantize")
        # The pattern the plugin special-cases: FakeQuantize fused first, then the sum, then another FakeQuantize.
        after = kinds[first_fq + 1 :]
        if "Add" in after and "FakeQuantize" in after[after.index("Add") + 1 :]:
            found.append(fused[first_fq])
    return found


def producer_key(fake_quantize: ov.Node) -> tuple[str, str]:
    """``(module path, aten op)`` of the node feeding a FakeQuantize, from names PyTorch conversion gives.

    ``__module.layer1.0.bn2/aten::batch_norm/BatchNormInference`` -> ``("layer1.0.bn2", "batch_norm")``;
    ``("", "")`` if the name does not have that form.
    """
    name = fake_quantize.input_value(0).get_node().get_friendly_name()
    parts = name.split("/")
    if len(parts) < 2 or not parts[0].startswith("__module") or not parts[1].startswith("aten::"):
        return "", ""
    return parts[0].removeprefix("__module").removeprefix("."), parts[1].removeprefix("aten::").rstrip("_")
