"""Where NNCF put its quantizers: each one's hook name and, for a weight quantizer, the weight it reads.

NNCF 3 keeps quantizers in a hook storage keyed by an encoded hook name; which of them quantize a
weight is only visible in the traced graph (a pre-hook on a port fed by a constant, the test
``nncf.strip`` uses too). Low-bit range search, export and layer diffs all need this map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from nncf.common.graph.graph import NNCFNode
from nncf.torch.function_hook.hook_storage import decode_hook_name
from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph
from nncf.torch.function_hook.wrapper import get_hook_storage
from nncf.torch.model_graph_manager import get_const_node, get_module_by_name, split_const_name
from nncf.torch.quantization.layers import BaseQuantizer
from torch import nn


@dataclass(frozen=True)
class QuantizerSite:
    name: str  # the hook name, e.g. "post_hooks.layer1/0/relu1/relu/0__0.0"
    quantizer: BaseQuantizer
    op_name: str  # the graph node the hook sits on
    weight: NNCFNode | None  # the constant node of the weight it quantizes; None for activations

    @property
    def is_weight(self) -> bool:
        return self.weight is not None


def quantizer_sites(model: nn.Module, example_input: torch.Tensor) -> list[QuantizerSite]:
    """Every NNCF quantizer of a hook-wrapped ``model``, in hook-storage order."""
    graph = build_nncf_graph(model, example_input)
    sites = []
    for name, module in get_hook_storage(model).named_hooks():
        if not isinstance(module, BaseQuantizer):
            continue
        hook_type, op_name, port_id = decode_hook_name(name)
        const = get_const_node(graph.get_node_by_name(op_name), port_id, graph) if hook_type == "pre_hooks" else None
        sites.append(QuantizerSite(name, module, op_name, const))
    return sites


def weight_parameter(model: nn.Module, site: QuantizerSite) -> nn.Parameter:
    """The parameter (or buffer) a weight quantizer reads."""
    module_name, attr = split_const_name(site.weight.layer_attributes.name)
    return getattr(get_module_by_name(module_name, model), attr)
