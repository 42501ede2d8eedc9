"""Hint points: auto-selected (clustered) vs conventional stage ends vs no hints, same budget and seed.

    python bench/hints.py [--config configs/digits_int8.json] [--set model.name=resnet20 ...]
                          [--bits 4] [--epochs 4] [--seeds 0 1 2] [--metric linear_cka]
                          [--with ENTRY_JSON ...] [--output bench/results/hints_digits.json]

Every recipe is QAT at ``--bits`` (weights and activations) plus ``--with`` entries (e.g. the
distillation entry), and then: ``no_hints``; ``stage_ends``: ``hint_distillation`` at the last block
of each stage (FitNets' usual choice); ``auto``: ``hint_distillation`` at as many clustered points
(``hint_points: "auto"``). For each seed the first recipe trains the FP32 reference and the others
compress that very checkpoint. Writes JSON (each run's mismatches in PyTorch and on OpenVINO CPU
f32, accuracies, the points used) and a plot. Runs on CIFAR-10 with
``--config configs/cifar10_resnet20_int8.json --set dataset.path=...``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from recipe_runs import plot_seed_bars, run_recipes

from nncf_lossless.algorithms.hint_distillation.hint_points import candidate_layers, stage_ends
from nncf_lossless.checkpoint import write_json
from nncf_lossless.config import load_config
from nncf_lossless.models import build_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "digits_int8.json")
    parser.add_argument("--set", action="append", default=["model.name=resnet20"], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--metric", default="linear_cka", choices=["linear_cka", "rbf_cka", "cca"])
    parser.add_argument("--samples", type=int, default=1000, help="teacher samples for the auto selection")
    parser.add_argument("--weight", type=float, default=1.0, help="hint loss weight")
    parser.add_argument("--with", dest="extra", action="append", default=[], metavar="ENTRY_JSON",
                        help='extra entry for every recipe, e.g. \'{"algorithm": "label_preserving_distillation"}\'')
    parser.add_argument("--output", type=Path, default=Path("bench/results/hints_digits.json"))
    args = parser.parse_args()

    base = load_config(args.config, args.overrides)
    model = build_model(base["model"], num_classes=10, in_channels=base["input_info"]["sample_size"][1])
    ends = stage_ends(candidate_layers(model))
    quant = {"algorithm": "quantization", "weights": {"bits": args.bits}, "activations": {"bits": args.bits}}
    extra = [json.loads(e) for e in args.extra]
    hint = {"algorithm": "hint_distillation", "weight": args.weight}
    recipes = {
        "no_hints": [quant, *extra],
        "stage_ends": [quant, *extra, {**hint, "hint_points": ends}],
        "auto": [quant, *extra, {**hint, "hint_points": "auto", "num_points": len(ends), "metric": args.metric,
                                 "samples": args.samples}],
    }
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_recipes(base, recipes, args.seeds, args.epochs, Path(tmp), extra=lambda results: {
            "hint_points": results["statistics"].get("hint_distillation", {}).get("hint_points", [])})
    report = {"config": str(args.config), "overrides": args.overrides, "bits": args.bits, "epochs": args.epochs,
              "seeds": args.seeds, "metric": args.metric, "stage_ends": ends, "recipes": rows}
    write_json(report, args.output)
    plot_seed_bars(rows, args.output.with_suffix(".png"), f"{args.bits}-bit QAT, {base['model']['name']}")
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
