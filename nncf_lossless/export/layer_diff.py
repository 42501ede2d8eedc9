"""Layer-by-layer comparison of a compressed PyTorch model with its OpenVINO IR.

OpenVINO's old ``cross_check_tool`` compared two devices layer by layer; this compares the NNCF
PyTorch model with the IR exported from it, on the same inputs, to find the first layer where
the IR stops computing what was trained. Two kinds of intermediate tensors are matched:

- activation quantizer outputs: NNCF's quantizers in execution order against the IR's
  ``FakeQuantize`` ops on non-constant inputs in topological order (weights are constants in
  the IR, so only activations remain);
- module outputs (convolutions, batch norms, linear layers): the IR keeps the module path in
  its node names (``__module.layer1.0.bn1/aten::...``), so a module matches the last IR node
  of that path whose output has the same shape; modules OpenVINO fused away are listed as unmatched.

A quantizer output can differ by one quantization step where its input differs only by float
noise (accumulation order): the input sat on a rounding boundary. Such *rounding ties* are
counted apart from real divergence, which is what ``first_divergence`` names. Every layer gets a
``status`` (:data:`STATUSES`): a layer that differs is a cause (``DIVERGES``) only if no earlier
tie or cause reaches it in the IR's graph; otherwise it differs downstream of one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch
from torch import nn

from nncf_lossless.algorithms.quantization.quantizer_sites import quantizer_sites
from nncf_lossless.checker.ov_runner import compile_ir
from nncf_lossless.errors import DataError

# Relative float noise allowed between PyTorch and OpenVINO f32 (different accumulation order).
NOISE = 1e-4
# Modules whose outputs are compared where the IR still has them (OpenVINO folds most BatchNorms
# into the convolution before them and renames the convolution, so those are not matched).
# A layer's status, in the report and the table. Only DIVERGES is a cause of its own.
DIVERGES = "DIVERGES"
DOWNSTREAM = "DOWNSTREAM"  # differs, downstream of a layer that DIVERGES
ROUNDING_TIE = "rounding tie"  # a quantizer output moved a step while its input differed only by float noise
TIE_DOWNSTREAM = "TIE-DOWNSTREAM"  # differs, downstream only of rounding ties
AGREES = ""
STATUSES = (DIVERGES, DOWNSTREAM, ROUNDING_TIE, TIE_DOWNSTREAM, AGREES)
_MODULE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                 nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


@dataclass
class LayerDiff:
    name: str
    kind: str  # "quantizer" or "module"
    ir_node: str
    shape: list[int]
    max_abs_diff: float
    mean_abs_diff: float
    # Quantizers only: max difference of the (clamped) inputs, quantization step, and the share of
    # output elements that differ by at least half a step.
    input_max_abs_diff: float | None = None
    step: float | None = None
    flipped_fraction: float | None = None
    diverged: bool = False
    status: str = AGREES


def diff_layers(model: nn.Module, ir_path: str | Path, inputs: np.ndarray, example_input: torch.Tensor,
                *, device: str = "CPU", precision: str | None = "f32") -> dict[str, Any]:
    """Runs ``model`` and the IR on ``inputs`` and compares matched intermediate tensors.

    Returns ``{"layers": [LayerDiff as dict, in execution order], "first_divergence": name or None,
    "first_rounding_tie": name or None, "status_counts": {...}, "unmatched": {...}, "logits": {...}}``:
    the first layer that differs beyond float noise where no earlier difference reaches it (see
    :func:`classify`), and the first quantizer whose output changed only because its input sat on a
    rounding boundary.
    """
    core = ov.Core()
    ir_path = Path(ir_path)
    if not ir_path.is_file():
        raise DataError(f"--ir: {ir_path} does not exist")
    ir = core.read_model(ir_path)
    expected = list(ir.input(0).get_partial_shape())
    if len(expected) != inputs.ndim or any(d.is_static and d.get_length() != s for d, s in zip(expected[1:], inputs.shape[1:])):
        raise DataError(f"--data: samples of shape {list(inputs.shape[1:])} do not fit the IR input {ir.input(0).get_partial_shape()}")

    torch_out, logits = _torch_tensors(model, inputs, example_input)
    fqs = [op for op in ir.get_ordered_ops()
           if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() != "Constant"]
    modules = _match_modules(ir, torch_out["modules"])
    ports = [fq.output(0) for fq in fqs] + [fq.input_value(0) for fq in fqs] + [node.output(0) for node in modules.values()]
    ir.add_outputs(ports)
    runner = compile_ir(ir, device, precision, core)
    compiled = runner.model
    results = compiled(inputs)
    # A port may already be an output, or be asked for twice (a pooling output feeding a quantizer).
    position = {_port_key(out.get_node().input_value(0)): i for i, out in enumerate(ir.outputs)}
    values = [results[compiled.output(position[_port_key(port)])] for port in ports]
    ir_logits = results[compiled.output(0)]
    fq_out, fq_in, mod_out = values[: len(fqs)], values[len(fqs) : 2 * len(fqs)], values[2 * len(fqs) :]

    layers: list[LayerDiff] = []
    nodes: dict[str, ov.Node] = {}
    quantized = torch_out["quantizers"]
    if len(quantized) == len(fqs):
        for (name, t_in, t_out), fq, i_in, i_out in zip(quantized, fqs, fq_in, fq_out):
            layers.append(_quantizer_diff(name, fq, t_in, t_out, i_in, i_out))
            nodes[name] = fq
    for (name, t_out), (node, i_out) in zip(((n, torch_out["modules"][n]) for n in modules),
                                             zip(modules.values(), mod_out)):
        layers.append(_module_diff(name, node.get_friendly_name(), t_out, i_out))
        nodes[name] = node
    order = {name: i for i, name in enumerate(torch_out["order"])}
    layers.sort(key=lambda layer: order.get(layer.name, len(order)))
    first, first_tie = classify(layers, _reachability(nodes))
    return {
        "ir": str(ir_path),
        "device": device,
        "precision": runner.precision,
        "num_samples": len(inputs),
        "layers": [asdict(layer) for layer in layers],
        "first_divergence": first,
        "first_rounding_tie": first_tie,
        "status_counts": {status or "agrees": sum(layer.status == status for layer in layers) for status in STATUSES},
        "unmatched": {
            "quantizers": [] if len(quantized) == len(fqs) else [name for name, _, _ in quantized],
            "ir_fake_quantize": 0 if len(quantized) == len(fqs) else len(fqs),
            "modules": sorted(set(torch_out["modules"]) - set(modules)),
        },
        "logits": {
            "max_abs_diff": float(np.abs(ir_logits - logits).max()),
            "mean_abs_diff": float(np.abs(ir_logits - logits).mean()),
            "top1_disagreements": int((ir_logits.argmax(1) != logits.argmax(1)).sum()),
        },
    }


def _port_key(port: ov.Output) -> tuple[str, int]:
    return port.get_node().get_friendly_name(), port.get_index()


def classify(layers: list[LayerDiff], reaches: Callable[[str, str], bool]) -> tuple[str | None, str | None]:
    """Sets each layer's ``status``; returns the first layer that DIVERGES and the first rounding tie.

    ``layers`` are in execution order; ``reaches(a, b)`` says whether layer ``b`` is downstream of
    ``a``. Everything downstream of a rounding tie differs too, so a layer that differs only counts
    as a cause if no earlier tie or cause reaches it.
    """
    causes: list[str] = []
    ties: list[str] = []
    for layer in layers:
        if not layer.diverged:
            layer.status = ROUNDING_TIE if layer.kind == "quantizer" and layer.flipped_fraction else AGREES
            if layer.status == ROUNDING_TIE:
                ties.append(layer.name)
        elif any(reaches(c, layer.name) for c in causes):
            layer.status = DOWNSTREAM
        elif any(reaches(t, layer.name) for t in ties):
            layer.status = TIE_DOWNSTREAM
        else:
            layer.status = DIVERGES
            causes.append(layer.name)
    return (causes[0] if causes else None), (ties[0] if ties else None)


def _reachability(nodes: dict[str, ov.Node]) -> Callable[[str, str], bool]:
    """``reaches(a, b)``: whether layer ``b``'s IR node is downstream of layer ``a``'s."""
    cache: dict[str, set[str]] = {}

    def downstream(name: str) -> set[str]:
        if name not in cache:
            seen: set[str] = set()
            stack = [nodes[name]]
            while stack:
                for output in stack.pop().outputs():
                    for target in output.get_target_inputs():
                        node = target.get_node()
                        if node.get_friendly_name() not in seen:
                            seen.add(node.get_friendly_name())
                            stack.append(node)
            cache[name] = seen
        return cache[name]

    return lambda a, b: a in nodes and b in nodes and nodes[b].get_friendly_name() in downstream(a)


def _torch_tensors(model: nn.Module, inputs: np.ndarray, example_input: torch.Tensor) -> tuple[dict[str, Any], np.ndarray]:
    """Activation-quantizer inputs/outputs and module outputs of one forward pass, in call order."""
    recorded: dict[str, Any] = {"quantizers": [], "modules": {}, "order": []}
    handles = []

    def on_quantizer(name: str):
        def hook(_module, args, output):
            recorded["quantizers"].append((name, args[0].detach().cpu().numpy(), output.detach().cpu().numpy()))
            recorded["order"].append(name)
        return hook

    def on_module(name: str):
        def hook(_module, _args, output):
            if name not in recorded["modules"]:
                recorded["modules"][name] = output.detach().cpu().numpy()
                recorded["order"].append(name)
        return hook

    quantized_ops = set()
    for site in quantizer_sites(model, example_input):
        if not site.is_weight:
            handles.append(site.quantizer.register_forward_hook(on_quantizer(site.name)))
            quantized_ops.add(site.op_name)
    for name, module in model.named_modules():
        # NNCF's post-hooks run inside the op, so a module whose op carries an activation quantizer
        # returns the quantized tensor, which the IR has after its FakeQuantize: that row is the quantizer's.
        prefix = name.replace(".", "/") + "/"
        if isinstance(module, _MODULE_TYPES) and not any(op.startswith(prefix) for op in quantized_ops):
            handles.append(module.register_forward_hook(on_module(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            logits = model(torch.from_numpy(inputs).to(device)).cpu().numpy()
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return recorded, logits


def _match_modules(ir: ov.Model, torch_modules: dict[str, np.ndarray]) -> dict[str, ov.Node]:
    """Torch module name -> the last IR node of that module path with the same output shape."""
    by_prefix: dict[str, ov.Node] = {}
    for op in ir.get_ordered_ops():
        name = op.get_friendly_name()
        if not name.startswith("__module.") or op.get_output_size() != 1 or not op.get_output_partial_shape(0).rank.is_static:
            continue
        path = name[len("__module."):].split("/", 1)[0]
        if path in torch_modules:
            shape = op.get_output_partial_shape(0)
            want = torch_modules[path].shape
            if len(shape) == len(want) and all(d.is_dynamic or d.get_length() == w for d, w in zip(shape, want)):
                by_prefix[path] = op
    return by_prefix


def _fq_range(fq: ov.Node) -> tuple[np.ndarray, np.ndarray, int]:
    low, high = (fq.input_value(i).get_node() for i in (1, 2))
    if low.get_type_name() != "Constant" or high.get_type_name() != "Constant":
        return np.array(-np.inf), np.array(np.inf), int(fq.get_attributes()["levels"])
    return low.get_data(), high.get_data(), int(fq.get_attributes()["levels"])


def _quantizer_diff(name: str, fq: ov.Node, t_in: np.ndarray, t_out: np.ndarray, i_in: np.ndarray,
                    i_out: np.ndarray) -> LayerDiff:
    low, high, levels = _fq_range(fq)
    # The FakeQuantize only sees its input clamped to its range; OpenVINO may also have moved it
    # across a ReLU, which the clamp makes irrelevant.
    diff_in = np.abs(np.clip(i_in, low, high) - np.clip(t_in, low, high))
    diff = np.abs(i_out - t_out)
    step = float(np.max(high - low) / (levels - 1)) if np.isfinite(high - low).all() else None
    scale = 1.0 + float(np.abs(t_out).max(initial=0.0))
    input_noise = diff_in.max(initial=0.0) <= NOISE * scale
    flipped = float((diff >= 0.5 * step).mean()) if step else None
    return LayerDiff(name=name, kind="quantizer", ir_node=fq.get_friendly_name(), shape=list(t_out.shape),
                     max_abs_diff=float(diff.max(initial=0.0)), mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
                     input_max_abs_diff=float(diff_in.max(initial=0.0)), step=step, flipped_fraction=flipped,
                     diverged=not input_noise)


def _module_diff(name: str, ir_node: str, t_out: np.ndarray, i_out: np.ndarray) -> LayerDiff:
    diff = np.abs(i_out - t_out)
    scale = 1.0 + float(np.abs(t_out).max(initial=0.0))
    return LayerDiff(name=name, kind="module", ir_node=ir_node, shape=list(t_out.shape),
                     max_abs_diff=float(diff.max(initial=0.0)), mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
                     diverged=bool(diff.max(initial=0.0) > NOISE * scale))
