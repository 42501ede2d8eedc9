"""Switchable per-bit-width state of one weight-shared network (as in Any-Precision DNNs, Yu et al. 2021).

The convolution and linear weights are shared by every bit-width. What is kept once per bit-width:

* each NNCF quantizer's range parameters (``_scale_param_storage`` of a symmetric quantizer,
  ``input_low`` / ``_input_range_param_storage`` of an asymmetric one), its ``half_range`` flag
  (NNCF's overflow fix halves 8-bit weights only) and its bits;
* each BatchNorm layer's affine parameters and running statistics.

A :class:`Banks` holds one *bank* of those tensors per bit-width and :meth:`Banks.activate` makes a
bank live by pointing the modules' parameter and buffer slots at its tensors (no copy): a forward
then runs at that bit-width, and its gradients reach that bank's parameters only. The highest
bit-width's bank *is* the model's original tensors, so with it active the model looks (to an
optimizer, DDP, a state_dict) exactly like a single-bit-width QAT model. ``activate`` also takes
per-block overrides: the blocks named run at another bit-width (dynamic block swapping).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from nncf.torch.quantization.layers import AsymmetricQuantizer, BaseQuantizer, SymmetricQuantizer
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nncf_lossless.algorithms.quantization.quantizer_sites import QuantizerSite

_BN_PARAMS = ("weight", "bias")
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def range_slots(q: BaseQuantizer) -> tuple[str, ...]:
    """Names, in ``q._parameters``, of the tensors that hold a quantizer's trainable range."""
    if isinstance(q, SymmetricQuantizer):
        return ("_scale_param_storage",)
    if isinstance(q, AsymmetricQuantizer):
        return ("input_low", "_input_range_param_storage")
    raise TypeError(f"multi_bit: unsupported quantizer type {type(q).__name__}")


@dataclass
class Unit:
    """One switchable module: a quantizer (``site``) or a BatchNorm layer (``bn``), and its block."""

    name: str
    module: nn.Module
    block: str | None
    site: QuantizerSite | None = None

    @property
    def is_quantizer(self) -> bool:
        return self.site is not None


@dataclass
class Bank:
    """The tensors of one bit-width: parameters and buffers by unit name and slot, plus quantizer flags."""

    weight_bits: int
    activation_bits: int
    params: dict[str, dict[str, nn.Parameter]] = field(default_factory=dict)
    buffers: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    half_range: dict[str, bool] = field(default_factory=dict)


class Banks:
    """One :class:`Bank` per bit-width over the quantizers and BatchNorm layers of a model."""

    def __init__(self, units: list[Unit], bits: list[tuple[int, int]]) -> None:
        """``bits``: (weight bits, activation bits) per bit-width, highest first; the first owns the model's tensors."""
        self.units = units
        self.banks: dict[int, Bank] = {}
        for i, (wb, ab) in enumerate(bits):
            bank = Bank(wb, ab)
            for unit in units:
                params, buffers = _slots(unit)
                bank.params[unit.name] = {k: p if i == 0 else _clone_param(p) for k, p in params.items()}
                bank.buffers[unit.name] = {k: b if i == 0 else b.detach().clone() for k, b in buffers.items()}
                if unit.is_quantizer:
                    # NNCF's overflow fix halves 8-bit weight ranges; at fewer bits there is no int16 to saturate.
                    bank.half_range[unit.name] = unit.module._half_range and wb == 8
            self.banks[wb] = bank
        self.top = bits[0][0]
        self.active: int = self.top

    @property
    def bit_widths(self) -> list[int]:
        return list(self.banks)

    def activate(self, bits: int, overrides: Mapping[str, int] | None = None) -> None:
        """Runs the model at ``bits``, except blocks named in ``overrides`` at the bits given there."""
        if bits not in self.banks:
            raise ValueError(f"multi_bit: bit-width {bits} is not one of {self.bit_widths}")
        overrides = overrides or {}
        top_bank = self.banks[self.top]
        for unit in self.units:
            bank = self.banks[overrides.get(unit.block, bits)]
            for slot, p in bank.params[unit.name].items():
                # frozen_bn freezes the live (highest) bank's BN affine; every bank follows it.
                source = top_bank.params[unit.name][slot]
                if p is not source and p.requires_grad != source.requires_grad:
                    p.requires_grad_(source.requires_grad)
                    p.grad = None
                unit.module._parameters[slot] = p
            for slot, b in bank.buffers[unit.name].items():
                unit.module._buffers[slot] = b
            if unit.is_quantizer:
                q = unit.module
                q._half_range = bank.half_range[unit.name]
                q.num_bits = bank.weight_bits if unit.site.is_weight else bank.activation_bits
        self.active = bits

    def parameters(self, *, inactive_only: bool = True) -> list[nn.Parameter]:
        """Every bank's parameters (highest bit-width first), without those the model currently holds."""
        live = {id(p) for unit in self.units for p in unit.module._parameters.values() if p is not None}
        return [p for bank in self.banks.values() for slots in bank.params.values() for p in slots.values()
                if not (inactive_only and id(p) in live)]

    def buffers(self, bits: Iterable[int]) -> list[torch.Tensor]:
        return [b for w in bits for slots in self.banks[w].buffers.values() for b in slots.values()]

    def state_dict(self) -> dict[str, Any]:
        return {str(bits): {"params": {u: {k: p.detach().clone() for k, p in s.items()} for u, s in bank.params.items()},
                            "buffers": {u: {k: b.detach().clone() for k, b in s.items()} for u, s in bank.buffers.items()},
                            "half_range": dict(bank.half_range)}
                for bits, bank in self.banks.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        if sorted(map(int, state)) != sorted(self.banks):
            raise ValueError(f"multi_bit: the saved bit-widths {sorted(map(int, state))} are not {sorted(self.banks)}")
        for bits, bank in self.banks.items():
            saved = state[str(bits)]
            for unit, slots in bank.params.items():
                for k, p in slots.items():
                    p.copy_(saved["params"][unit][k])
            for unit, slots in bank.buffers.items():
                for k, b in slots.items():
                    b.copy_(saved["buffers"][unit][k])
            bank.half_range.update({u: bool(v) for u, v in saved["half_range"].items()})


def batch_norm_units(model: nn.Module, blocks: list[str], exclude: Iterable[nn.Module] = ()) -> list[Unit]:
    skip = {id(m) for m in exclude}
    return [Unit(name, m, block_of(name, blocks)) for name, m in model.named_modules()
            if isinstance(m, _BatchNorm) and id(m) not in skip]


def quantizer_units(sites: list[QuantizerSite], blocks: list[str]) -> list[Unit]:
    return [Unit(site.name, site.quantizer, block_of(module_path(site.op_name), blocks), site) for site in sites]


def module_path(op_name: str) -> str:
    """``layer1/0/conv1/conv2d/0`` -> ``layer1.0.conv1``: the module an NNCF graph node runs in."""
    parts = op_name.strip("/").split("/")
    return ".".join(parts[:-2])


def block_of(module_name: str, blocks: list[str]) -> str | None:
    """The longest block name that is ``module_name`` or one of its parents; ``None`` if none is."""
    found = [b for b in blocks if module_name == b or module_name.startswith(b + ".")]
    return max(found, key=len) if found else None


def default_blocks(model: nn.Module) -> list[str]:
    """The model's top-level children, containers among them split into their children.

    ResNet-20: ``stem``, ``layer1.0`` ... ``layer3.2``, ``fc``; the digits CNN: ``features.0``,
    ``features.1``, ``features.3``, ``classifier`` (modules without parameters are dropped).
    """
    root = getattr(model, "model", model) if type(model).__name__ == "_SequentialWrapper" else model
    prefix = "model." if root is not model else ""
    names = []
    for name, child in root.named_children():
        if name.startswith("__nncf"):  # NNCF's hook storage: the quantizers themselves
            continue
        grandchildren = list(child.named_children())
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and any(list(g.children()) for _, g in grandchildren):
            names += [f"{prefix}{name}.{g}" for g, m in grandchildren if any(True for _ in m.parameters())]
        elif any(True for _ in child.parameters()):
            names.append(prefix + name)
    return names


def _slots(unit: Unit) -> tuple[dict[str, nn.Parameter], dict[str, torch.Tensor]]:
    m = unit.module
    if unit.is_quantizer:
        return {k: m._parameters[k] for k in range_slots(m)}, {}
    params = {k: m._parameters[k] for k in _BN_PARAMS if m._parameters.get(k) is not None}
    buffers = {k: m._buffers[k] for k in _BN_BUFFERS if m._buffers.get(k) is not None}
    return params, buffers


def _clone_param(p: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
