"""Quantizer groups of a compressed IR and the IR with some of them reverted to float.

Grouping is NNCF's own (``Ranker.find_groups_of_quantizers_to_rank`` with its OpenVINO backend,
i.e. ``find_quantizer_nodes_to_cut``): the FakeQuantize ops that must go together for the graph
to stay valid, and the operations that then run in float. It works on any ``ov.Model`` with
FakeQuantize ops, so also on a QAT export.

Removing them is ours, not NNCF's ``revert_operations_to_floating_point_precision``, for two
reasons found on our IRs: OpenVINO fuses a ReLU into the FakeQuantize that follows it
(``input_low = 0``), so NNCF's removal (input wired straight to the consumers) also deletes the
ReLU; and OpenVINO serializes quantized weights as low-bit constants + Convert + Multiply, which
NNCF's weight restore writes back into the low-bit constant. Here an unsigned FakeQuantize
becomes a ReLU (or a ``Maximum`` with its lower bound) and a signed one disappears; a reverted
operation's weights and bias are taken from the reference IR (NNCF's default
``ACTIVATIONS_AND_WEIGHTS`` restore mode), matched by position among the weighted operations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from nncf_lossless.checker.errors import DataError

WEIGHTED_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul")
RESTORE_MODES = ("activations_and_weights", "only_activations")


@dataclass(frozen=True)
class QuantizerGroup:
    """FakeQuantize ops removed together, and the operations that then run in float."""

    quantizers: tuple[str, ...]
    operations: tuple[str, ...]
    operation_types: tuple[str, ...] = field(default=())
    # OpenVINO renames a convolution after the BatchNorm multiply it absorbed ("Multiply_123"); the
    # bias Add after it keeps the framework's layer name, which is what a user recognises.
    operation_labels: tuple[str, ...] = field(default=())

    def describe(self) -> dict[str, list[str]]:
        return {"quantizers": list(self.quantizers), "operations": list(self.operations),
                "operation_types": list(self.operation_types), "operation_labels": list(self.operation_labels)}


def quantizer_groups(model: ov.Model) -> list[QuantizerGroup]:
    """NNCF's groups of the model's FakeQuantize ops, in the model's topological order."""
    from nncf.openvino.graph.nncf_graph_builder import GraphConverter
    from nncf.quantization.algorithms.accuracy_control.openvino_backend import OVAccuracyControlAlgoBackend
    from nncf.quantization.algorithms.accuracy_control.ranker import Ranker

    graph = GraphConverter.create_nncf_graph(model)
    # Only the backend is used for grouping: no dataset or evaluator is needed.
    ranker = Ranker(0, None, OVAccuracyControlAlgoBackend(), None)
    order = {op.get_friendly_name(): i for i, op in enumerate(model.get_ordered_ops())}
    by_name = {op.get_friendly_name(): op for op in model.get_ops()}
    groups = []
    for group in ranker.find_groups_of_quantizers_to_rank(graph):
        names = sorted((op.node_name for op in group.operations), key=lambda n: order.get(n, -1))
        groups.append(QuantizerGroup(
            quantizers=tuple(sorted((q.node_name for q in group.quantizers), key=lambda n: order.get(n, -1))),
            operations=tuple(names),
            operation_types=tuple(by_name[n].get_type_name() if n in by_name else "?" for n in names),
            operation_labels=tuple(_label(by_name[n]) if n in by_name else n for n in names),
        ))
    return sorted(groups, key=lambda g: min(order.get(q, -1) for q in g.quantizers))


def _label(op: ov.Node) -> str:
    add = _bias_add(op) if op.get_type_name() in WEIGHTED_TYPES else None
    return add[0].get_friendly_name() if add is not None else op.get_friendly_name()


# ---- weights of the reference ----------------------------------------------------------------

def _constant_derived(output: ov.Output, memo: dict[int, bool]) -> bool:
    node = output.get_node()
    key = id(node)
    if key not in memo:
        if node.get_type_name() == "Constant":
            memo[key] = True
        elif node.get_type_name() == "Parameter" or not node.inputs():
            memo[key] = False
        else:
            memo[key] = all(_constant_derived(i.get_source_output(), memo) for i in node.inputs())
    return memo[key]


def weighted_ops(model: ov.Model) -> list[ov.Node]:
    """Convolutions and MatMuls whose second input is computed from constants only, in topological order."""
    memo: dict[int, bool] = {}
    return [op for op in model.get_ordered_ops() if op.get_type_name() in WEIGHTED_TYPES
            and _constant_derived(op.input(1).get_source_output(), memo)]


def _constant_value(output: ov.Output) -> np.ndarray | None:
    """The value of a Constant, or of a Convert of one (an f16 IR); ``None`` for anything computed."""
    node = output.get_node()
    if node.get_type_name() == "Convert" and node.input_value(0).get_node().get_type_name() == "Constant":
        return node.input_value(0).get_node().get_data().astype(np.float32)
    if node.get_type_name() == "Constant":
        return np.array(node.get_data(), dtype=np.float32)
    return None


def _bias_add(op: ov.Node) -> tuple[ov.Node, int] | None:
    """The Add right after ``op`` that adds a constant (a bias, folded BatchNorm), and its constant's port."""
    targets = list(op.output(0).get_target_inputs())
    if len(targets) != 1 or targets[0].get_node().get_type_name() != "Add":
        return None
    add = targets[0].get_node()
    port = 1 - targets[0].get_index()
    return (add, port) if _constant_value(add.input_value(port)) is not None else None


@dataclass(frozen=True)
class ReferenceWeights:
    """Per compressed weighted op (by name): the reference's weight and bias (``None`` if it has none)."""

    weights: dict[str, np.ndarray]
    biases: dict[str, np.ndarray]


def reference_weights(compressed: ov.Model, reference: ov.Model) -> ReferenceWeights:
    """Pairs the weighted ops of both IRs by position; raises :class:`DataError` if the IRs differ in them."""
    mine, theirs = weighted_ops(compressed), weighted_ops(reference)
    if len(mine) != len(theirs):
        raise DataError(f"--reference: {len(theirs)} convolutions/MatMuls with weights, but --compressed has {len(mine)}; "
                        "pass --restore-mode only_activations for IRs of different graphs")
    weights, biases = {}, {}
    for op, ref in zip(mine, theirs):
        name = op.get_friendly_name()
        shape = list(op.input(1).get_partial_shape().to_shape())
        value = _constant_value(ref.input_value(1))
        if value is None or list(value.shape) != shape:
            raise DataError(f"--reference: the weights of {ref.get_friendly_name()} ({list(ref.input(1).get_partial_shape())}) "
                            f"do not fit {name} of --compressed ({shape}); pass --restore-mode only_activations")
        weights[name] = value
        ref_add, my_add = _bias_add(ref), _bias_add(op)
        if ref_add is not None and my_add is not None:
            bias = _constant_value(ref_add[0].input_value(ref_add[1]))
            if list(bias.shape) == list(my_add[0].input(my_add[1]).get_partial_shape().to_shape()):
                biases[name] = bias
    return ReferenceWeights(weights, biases)


# ---- revert ----------------------------------------------------------------------------------

def _float_stand_in(fq: ov.Node) -> ov.Output:
    """What a FakeQuantize leaves when it stops rounding: its input, with any ReLU it absorbed."""
    source = fq.input_value(0)
    low = _constant_value(fq.input_value(1))
    if low is None or np.all(low < 0):
        return source
    if np.all(low == 0):
        return ops.relu(source).output(0)
    # A positive lower bound clips like a ReLU with a threshold; negative entries clip nothing there.
    return ops.maximum(source, ops.constant(np.where(low < 0, -np.inf, low).astype(np.float32))).output(0)


def revert(model: ov.Model, groups: Iterable[QuantizerGroup], weights: ReferenceWeights | None) -> ov.Model:
    """A copy of ``model`` with ``groups`` in float: FakeQuantize ops removed, weights restored if given."""
    model = model.clone()
    by_name = {op.get_friendly_name(): op for op in model.get_ops()}
    for group in groups:
        for name in group.quantizers:
            fq = by_name[name]
            stand_in = _float_stand_in(fq)
            for target in list(fq.output(0).get_target_inputs()):
                target.replace_source_output(stand_in)
        if weights is None:
            continue
        for name in group.operations:
            if name not in weights.weights:
                continue
            op = by_name[name]
            op.input(1).replace_source_output(ops.constant(weights.weights[name]).output(0))
            add = _bias_add(op)
            if add is not None and name in weights.biases:
                add[0].input(add[1]).replace_source_output(ops.constant(weights.biases[name]).output(0))
    model.validate_nodes_and_infer_types()
    return model


def layer_names(groups: Sequence[QuantizerGroup]) -> list[str]:
    """The operations the groups put in float, in order, each once."""
    seen: dict[str, None] = {}
    for group in groups:
        seen.update(dict.fromkeys(group.operations))
    return list(seen)
