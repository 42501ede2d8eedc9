"""Low-bit QAT on top of NNCF's 8-bit quantizers.

NNCF 3's ``nncf.quantize`` only sets up 8-bit quantizers for its CPU/ANY hardware configs, but its
quantizer modules accept another ``num_bits`` (their levels, and the exported FakeQuantize, follow).
A range calibrated for 256 levels is a poor start for 16, so after changing the bits each
quantizer's range is re-initialised: a grid of shrink factors is tried one quantizer at a time,
in graph order, keeping the factor whose *model output* is closest (MSE) to the FP32 reference's
on calibration samples. Minimising each quantizer's own error instead (the usual local MSE) clips
the few large values that decide the class and, measured on digits, leaves the logits further
from the reference than plain min/max does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from nncf.torch.quantization.layers import AsymmetricQuantizer, BaseQuantizer, SymmetricQuantizer
from torch import nn

from nncf_lossless.algorithms.quantization.quantizer_sites import QuantizerSite, quantizer_sites, weight_parameter

SHRINK_GRID = [round(0.3 + 0.05 * i, 2) for i in range(15)]  # 0.30 ... 1.00
# Calibration samples the search runs on: enough for a stable output MSE, cheap to re-run per factor.
SEARCH_SAMPLES = 256


def quantizers(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[BaseQuantizer, bool]]:
    """Every NNCF quantizer of ``model`` by hook name, in graph order, with ``True`` if it quantizes a weight."""
    return {site.name: (site.quantizer, site.is_weight) for site in quantizer_sites(model, example_input)}


def set_bits(
    model: nn.Module,
    reference: nn.Module,
    example_input: torch.Tensor,
    calibration_inputs: Iterable[torch.Tensor],
    *,
    weight_bits: int,
    activation_bits: int,
    weight_search: str = "output_mse",
) -> None:
    """Sets the bits of every quantizer and re-initialises the ranges of those that changed.

    ``weight_search: "channel_mse"`` gives each changed weight quantizer per-channel ranges of least
    weight error (:func:`channel_mse_weight_ranges`) before the output-MSE search of the activations;
    ``"output_mse"`` searches weights and activations alike, one factor per quantizer."""
    changed, weights = [], []
    for site in quantizer_sites(model, example_input):
        q = site.quantizer
        bits = weight_bits if site.is_weight else activation_bits
        if q.num_bits != bits:
            q.num_bits = bits
            (weights if site.is_weight and weight_search == "channel_mse" else changed).append(site)
    channel_mse_weight_ranges(model, weights)
    if changed:
        search_ranges(model, reference, [site.quantizer for site in changed], calibration_inputs)


@torch.no_grad()
def channel_mse_weight_ranges(model: nn.Module, sites: list[QuantizerSite]) -> None:
    """Shrinks each weight quantizer's range, channel by channel (per its scale's shape), to the
    :data:`SHRINK_GRID` factor of least squared error between the weights and their quantized values.

    At 4 bits a min/max range spends its 15 levels on each channel's largest weight; the local error is
    the right target for weights (unlike activations, whose few large values decide the class), and
    channels of a per-channel quantizer do not interact, so one pass over the grid searches all at once."""
    for site in sites:
        q, w = site.quantizer, weight_parameter(model, site).detach()
        shape = _range_params(q)[-1].shape
        _shrink_to_least(q, lambda q=q, w=w, shape=shape: _sum_per_scale((q(w) - w).pow(2), shape))


def _shrink_to_least(q: BaseQuantizer, error: Callable[[], torch.Tensor]) -> None:
    """Scales ``q``'s range by every :data:`SHRINK_GRID` factor and keeps the one of least ``error()``:
    one factor if it returns a scalar, one per scale entry if it returns the scale's shape."""
    params = _range_params(q)
    original = [p.detach().clone() for p in params]
    errors = []
    for factor in SHRINK_GRID:
        for p, o in zip(params, original):
            p.copy_(o * factor)
        errors.append(error())
    best = torch.tensor(SHRINK_GRID)[torch.stack(errors).argmin(0)]  # argmin: the first of equal errors
    for p, o in zip(params, original):
        p.copy_(o * best.to(o.dtype))


def _sum_per_scale(error: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``error`` summed over the elements each entry of a scale of ``shape`` covers, in that shape."""
    if len(shape) != error.dim():  # one scale for the whole tensor
        return error.sum().reshape([1] * len(shape)).expand(shape)
    return error.sum(dim=[d for d in range(error.dim()) if shape[d] == 1], keepdim=True)


def search_activation_ranges(model: nn.Module, reference: nn.Module, example_input: torch.Tensor,
                             calibration_inputs: Iterable[torch.Tensor], bits: int) -> None:
    """The output-MSE shrink search on every activation quantizer at ``bits`` (``range_search: output_mse``)."""
    qs = [q for q, is_weight in quantizers(model, example_input).values() if not is_weight and q.num_bits == bits]
    search_ranges(model, reference, qs, calibration_inputs)


def search_ranges(model: nn.Module, reference: nn.Module, qs: list[BaseQuantizer],
                  calibration_inputs: Iterable[torch.Tensor]) -> None:
    """Re-initialises the ranges of ``qs`` (already at their new bits) by the output-MSE shrink search."""
    _search_ranges(model, reference, qs, _samples(calibration_inputs))


def _samples(inputs: Iterable[torch.Tensor]) -> torch.Tensor:
    xs, n = [], 0
    for x in inputs:
        xs.append(x)
        n += len(xs[-1])
        if n >= SEARCH_SAMPLES:
            break
    return torch.cat(xs)[:SEARCH_SAMPLES]


def _range_params(q: BaseQuantizer) -> list[nn.Parameter]:
    if q.is_using_log_scale_storage:
        raise TypeError("log-scale quantizer storage is not supported for low-bit re-initialisation")
    if isinstance(q, SymmetricQuantizer):
        return [q._scale_param_storage]
    if isinstance(q, AsymmetricQuantizer):
        return [q.input_low, q.input_range]
    raise TypeError(f"unsupported quantizer type {type(q).__name__}")


@torch.no_grad()
def _search_ranges(model: nn.Module, reference: nn.Module, qs: list[BaseQuantizer], x: torch.Tensor) -> None:
    was_training = model.training
    model.eval()
    try:
        target = reference(x)
        for q in qs:
            _shrink_to_least(q, lambda: (model(x) - target).pow(2).mean())
    finally:
        model.train(was_training)
