"""Would per-channel activation ranges help? A probe by cross-layer equalisation, after post-training quantization.

    python bench/equalization_probe.py --data ../shared/data/cifar10-jpeg.zip

NNCF 3.4 refuses per-channel activation quantizers for every hardware target. Their effect can be had
without them where a BatchNorm -> ReLU -> Conv chain has no other consumer (each ResNet-20 block's first
half): multiplying channel c after the BatchNorm by s_c (its weight and bias; ReLU commutes with s_c > 0)
and dividing the next conv's input channel c by s_c leaves the FP32 function unchanged but gives the
per-tensor quantizer after the ReLU channels of the ranges it chooses. ``alpha`` balances activation
against weight ranges as SmoothQuant does (1: equal activation ranges; 0.5: activation and weight range
products equal). Each variant is quantized as the shipped flip-first config calibrates (histogram ranges,
5,000 images) and its labels compared with the reference's on a fixed 15,000 of the development images
(``bench/flip_first_dev.py``; never the test set). Writes ``bench/results/equalization_probe.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import common
import numpy as np
import torch
from cpu_flags import cpu_flags
from flip_first_dev import development_split
from torch import nn

from nncf_lossless.checker.atomic import write_json
from nncf_lossless.config import load_config
from nncf_lossless.controller import create_compressed_model
from nncf_lossless.data import load_dataset
from nncf_lossless.models import build_model
from nncf_lossless.training.loop import make_loaders

CONFIG = common.ROOT / "configs" / "cifar10_resnet20_int8_flip_first.json"


def main() -> int:
    parser = common.parser(__doc__, "equalization_probe")
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.5, 1.0])
    parser.add_argument("--max-samples", type=int, default=15000)
    return common.run_main(bench, parser.parse_args())


def bn_relu_conv_chains(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d, nn.Conv2d]]:
    """(name, bn, conv) where the BatchNorm's only consumer is a ReLU whose only consumer is a dense conv."""
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())

    def only_user(node: Any, kind: type) -> Any:
        user = next(iter(node.users)) if len(node.users) == 1 else None
        ok = user is not None and user.op == "call_module" and isinstance(modules[user.target], kind)
        return user if ok else None

    chains = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.BatchNorm2d):
            relu = only_user(node, nn.ReLU)
            conv = relu and only_user(relu, nn.Conv2d)
            if conv is not None and modules[conv.target].groups == 1:
                chains.append((node.target, modules[node.target], modules[conv.target]))
    return chains


@torch.no_grad()
def equalize(model: nn.Module, batches: list[torch.Tensor], alpha: float) -> dict[str, float]:
    """Equalises every chain in place; returns each chain's range spread (max / median) before and after."""
    chains = bn_relu_conv_chains(model)
    peak = {name: torch.zeros(bn.num_features) for name, bn, _ in chains}

    def record(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:  # None: the output stays
            peak[name] = torch.maximum(peak[name], output.clamp(min=0).amax((0, 2, 3)))
        return hook

    hooks = [bn.register_forward_hook(record(name)) for name, bn, _ in chains]
    for x in batches:
        model(x)
    for h in hooks:
        h.remove()
    spread = {}
    for name, bn, conv in chains:
        a, w = peak[name], conv.weight.abs().amax((0, 2, 3))
        live = (a > 0) & (w > 0)
        m = torch.ones_like(a)
        m[live] = w[live] ** (1 - alpha) / a[live] ** alpha  # the activation's multiplier
        m[live] /= m[live].log().mean().exp()  # keep the overall scale: only the channels' ratios matter
        bn.weight.mul_(m)
        bn.bias.mul_(m)
        conv.weight.div_(m.view(1, -1, 1, 1))
        spread[name] = [float(a[live].max() / a[live].median()), float((a * m)[live].max() / (a * m)[live].median())]
    return spread


def bench(args: argparse.Namespace) -> int:
    common.require_data(args)
    raw = json.loads(CONFIG.read_text())
    raw["compression"] = [raw["compression"][0]]  # the quantization entry alone: post-training quantization
    # The flip-first bench's data split, so the development images are the ones no row trained on.
    config = load_config(raw, [f"dataset.path={args.data}", f"model.checkpoint={args.reference}",
                               "dataset.max_train_samples=5000", 'dataset.validation={"count": 2000, "seed": 0}',
                               "training.num_workers=0"])
    data = load_dataset(config["dataset"], seed=0)
    loaders = make_loaders(data, config["training"])
    x, _, _ = development_split(config)
    x = torch.from_numpy(x[np.sort(np.random.default_rng(0).permutation(len(x))[:args.max_samples])])

    def fresh() -> nn.Module:
        model = build_model(config["model"], num_classes=len(data.class_names), in_channels=3)
        model.load_state_dict(torch.load(args.reference, weights_only=True)["state_dict"])
        return model.eval()

    @torch.no_grad()
    def labels(model: nn.Module) -> torch.Tensor:
        model.eval()
        return torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])

    reference = labels(fresh())
    batches = [b for b, _ in list(loaders.calibration)[:8]]
    rows: dict[str, Any] = {}
    for alpha in [None, *args.alphas]:
        model, spread = fresh(), {}
        if alpha is not None:
            spread = equalize(model, batches, alpha)
        fp32_flips = int((labels(model) != reference).sum())
        started = time.perf_counter()
        _, quantized = create_compressed_model(model, config, calibration_data=loaders.calibration)
        name = "none" if alpha is None else f"alpha_{alpha:g}"
        rows[name] = {"fp32_flips": fp32_flips, "ptq_flips": int((labels(quantized) != reference).sum()),
                      "range_spread_before_after": spread, "seconds": time.perf_counter() - started}
        print(f"{name}: {rows[name]['ptq_flips']} of {len(x)} flipped after PTQ (FP32 {fp32_flips})", file=sys.stderr)
    write_json({"cpu_flags": cpu_flags(), "config": str(CONFIG.relative_to(common.ROOT)),
                             "development_images": len(x), "rows": rows}, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
