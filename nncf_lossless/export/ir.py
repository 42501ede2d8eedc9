"""OpenVINO IR export of a compressed model and its FP32 reference.

The compressed model is first stripped with ``nncf.strip`` (NNCF's quantizers become
FakeQuantize ops OpenVINO converts 1:1; pruning masks are applied to the weights). Both IRs are
saved with ``compress_to_fp16=False``: an FP16 copy of the reference would no longer be the
reference. Each IR carries ``rt_info`` so a deployment needs nothing else: class names, input
shape and normalisation, the config, and which IR is the reference of which.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import nncf
import nncf.torch
import openvino as ov
import torch
from nncf.torch.function_hook.wrapper import is_wrapped
from nncf.torch.quantization.layers import BaseQuantizer
from torch import nn

from nncf_lossless.algorithms.quantization.quantizer_sites import quantizer_sites, weight_parameter
from nncf_lossless.checker.atomic import atomic_directory
from nncf_lossless.errors import ConfigError

REFERENCE_IR = "reference.xml"
COMPRESSED_IR = "compressed.xml"
RT_NAMESPACE = "nncf_lossless"


def export_pair(
    model: nn.Module,
    reference: nn.Module,
    out_dir: Path,
    *,
    example_input: torch.Tensor,
    config: dict[str, Any],
    metadata: dict[str, Any],
    batch: int | None = None,
    variants: Mapping[str, Callable[[], None]] | None = None,
) -> dict[str, Path]:
    """Writes ``reference.xml`` and ``compressed.xml`` (+ ``.bin``) into ``out_dir``, atomically as a pair.

    ``out_dir`` is replaced whole (see :func:`~nncf_lossless.checker.atomic.atomic_directory`), so it
    must be absent, empty or hold an earlier pair; anything else is a :class:`ConfigError`.

    ``variants`` (name -> a function that puts ``model`` into that variant, e.g. one bit-width of a
    multi-bit model) writes ``compressed_{name}.xml`` for each instead of ``compressed.xml``; the
    result maps ``compressed_{name}`` to each and ``compressed`` to the first.

    ``metadata`` may hold ``class_names``, ``mean`` and ``std`` (per channel, for pixels in [0, 1]).
    ``batch`` fixes the batch dimension; ``None`` (default: ``config["export"]["batch"]``) keeps it dynamic.
    """
    batch = batch if batch is not None else config.get("export", {}).get("batch")
    shape = [batch if batch is not None else -1, *example_input.shape[1:]]
    common = {
        "input_shape": json.dumps(list(example_input.shape)),
        "class_names": json.dumps(metadata.get("class_names")),
        "mean": json.dumps(metadata.get("mean")),
        "std": json.dumps(metadata.get("std")),
        "config": json.dumps(config),
    }
    _check_own_directory(out_dir)
    # Both IRs are written into a new directory that then replaces out_dir whole: a reader never
    # sees a reference.xml of one export next to a compressed.xml of another.
    with atomic_directory(out_dir) as tmp:
        written = {}
        pairs = [("reference", REFERENCE_IR, reference)]
        if variants:
            for name, activate in variants.items():
                activate()
                pairs.append((f"compressed_{name}", f"compressed_{name}.xml", stripped(model, example_input)))
        else:
            pairs.append(("compressed", COMPRESSED_IR, stripped(model, example_input)))
        compressed_irs = [xml for role, xml, _ in pairs[1:]]
        for role, xml, net in pairs:
            ov_model = _convert(net, example_input, shape)
            info = {**common, "role": role.split("_")[0], "reference_ir": REFERENCE_IR,
                    "compressed_ir": xml if role != "reference" else compressed_irs[0]}
            if variants:
                info["compressed_irs"] = json.dumps(compressed_irs)
            _set_rt_info(ov_model, info, metadata)
            ov.save_model(ov_model, tmp / xml, compress_to_fp16=False)
            written[role] = xml
    paths = {role: out_dir / xml for role, xml in written.items()}
    return {**paths, "compressed": out_dir / compressed_irs[0]} if variants else paths


def _check_own_directory(out_dir: Path) -> None:
    """The pair replaces ``out_dir`` whole, so it must hold nothing but a previous pair (or multi-bit set)."""
    ours = re.compile(r"(reference|compressed(_\w+)?)\.(xml|bin)")
    if not out_dir.is_dir():
        if out_dir.exists():
            raise ConfigError(f"{out_dir}: not a directory; the IR pair is exported into a directory")
        return
    # Dot entries: temporaries an interrupted export left (older versions wrote them inside out_dir).
    foreign = sorted(p.name for p in out_dir.iterdir() if not ours.fullmatch(p.name) and not p.name.startswith(".export-"))
    if foreign:
        raise ConfigError(f"{out_dir}: holds other files than an IR pair ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}); export into a directory of its own")


def compressed_to_openvino(model: nn.Module, example_input: torch.Tensor, shape: list[int] | None = None) -> ov.Model:
    """The in-memory ``ov.Model`` that :func:`export_pair` saves as ``compressed.xml`` (without rt_info)."""
    return _convert(stripped(model, example_input), example_input, shape or [-1, *example_input.shape[1:]])


def stripped(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """The model as it should run on the device: NNCF's strip for 8 bits, our equivalent for fewer.

    ``nncf.strip`` turns 8-bit quantizers into torch FakeQuantize modules, which OpenVINO converts
    closer to the PyTorch arithmetic than NNCF's own traced export (on digits: 0 top-1 changes and
    max logit drift 0.013, against 1 and 0.12). It refuses other bit widths; those models keep
    NNCF's quantizers, which export themselves as FakeQuantize, after :func:`_bake_weights`.
    """
    if not is_wrapped(model):
        return model
    was_training = model.training
    model.eval()
    try:
        if any(q.num_bits != 8 for q in model.modules() if isinstance(q, BaseQuantizer)):
            return _bake_weights(copy.deepcopy(model), example_input)
        return nncf.strip(model, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example_input)
    finally:
        model.train(was_training)


@torch.no_grad()
def _bake_weights(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """Replaces each quantized weight by its quantized value, clamped to the trained range.

    NNCF exports a narrow-range weight quantizer (levels -7..7 at 4 bits) as a FakeQuantize over
    the full -8..7, so a weight that drifted below the range during QAT is rounded to -8 in the IR
    where training clamped it to -7 (on a CIFAR-10 ResNet-20, ~1% of 4-bit weights, enough to
    change 14% of the labels). ``nncf.strip`` does the same baking for 8 bits; on weights already
    on the grid the exported FakeQuantize is exact.
    """
    for site in quantizer_sites(model, example_input):
        if site.is_weight:
            weight = weight_parameter(model, site)
            low, high = site.quantizer.get_input_low_input_high()
            weight.data = site.quantizer.quantize(torch.min(torch.max(weight, low), high))
    return model


def _convert(net: nn.Module, example_input: torch.Tensor, shape: list[int]) -> ov.Model:
    if example_input.device.type != "cpu":
        net, example_input = copy.deepcopy(net).cpu(), example_input.cpu()
    was_training = net.training
    net.eval()
    try:
        # convert_model traces with torch.jit, which warns about NNCF's quantizers on every export.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ov.convert_model(net, example_input=example_input, input=[ov.PartialShape(shape)])
    finally:
        net.train(was_training)


def _set_rt_info(ov_model: ov.Model, info: dict[str, str], metadata: dict[str, Any]) -> None:
    for key, value in info.items():
        ov_model.set_rt_info(value, [RT_NAMESPACE, key])
    # OpenVINO Model API's own keys, so its tools read labels and preprocessing too.
    ov_model.set_rt_info("Classification", ["model_info", "model_type"])
    if metadata.get("class_names"):
        ov_model.set_rt_info(" ".join(map(str, metadata["class_names"])), ["model_info", "labels"])
    if metadata.get("mean") and metadata.get("std"):
        ov_model.set_rt_info(" ".join(f"{255 * m:g}" for m in metadata["mean"]), ["model_info", "mean_values"])
        ov_model.set_rt_info(" ".join(f"{255 * s:g}" for s in metadata["std"]), ["model_info", "scale_values"])
