"""Frozen BN on digits 4-bit QAT: mismatches with and without it, same reference, budget and seeds.

    python bench/frozen_bn.py [--seeds 0 1 2] [--epochs 6] [--output bench/results/frozen_bn.json]
                              [--recipe NAME='[{"algorithm": ...}, ...]' ...]

Every recipe is 4-bit QAT (weights and activations) plus its extra compression entries; built in are
``int4_qat`` (none) and ``int4_qat_frozen_bn`` (``frozen_bn`` at its default, half of the training).
``--recipe`` adds one (e.g. a distillation entry, with and without ``frozen_bn``). For each seed the
first recipe trains the FP32 reference and the others compress that very checkpoint. Writes JSON
(per recipe: each seed's mismatches, in PyTorch and on OpenVINO CPU f32) and a plot next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from recipe_runs import plot_seed_bars, run_recipes

from nncf_lossless.checkpoint import write_json

INT4 = {"algorithm": "quantization", "weights": {"bits": 4}, "activations": {"bits": 4}}
RECIPES: dict[str, list[dict]] = {
    "int4_qat": [],
    "int4_qat_frozen_bn": [{"algorithm": "frozen_bn"}],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench/results/frozen_bn.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--recipe", action="append", default=[], metavar="NAME=JSON",
                        help="extra recipe: a JSON list of compression entries added to 4-bit QAT")
    args = parser.parse_args()
    recipes = {**RECIPES, **dict(_parse_recipe(r) for r in args.recipe)}
    base = json.loads((Path(__file__).resolve().parents[1] / "configs" / "digits_int8.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_recipes(base, {name: [INT4, *extra] for name, extra in recipes.items()}, args.seeds, args.epochs,
                           Path(tmp), extra=lambda results: {
                               "mismatches_by_epoch": [h["mismatches"] for h in results["history"]],
                               "frozen_bn": results["statistics"].get("frozen_bn")})
    report = {"seeds": args.seeds, "epochs": args.epochs, "lr": base["training"]["lr"], "recipes": rows}
    write_json(report, args.output)
    plot_seed_bars(rows, args.output.with_suffix(".png"), "4-bit QAT on digits")
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")
    return 0


def _parse_recipe(text: str) -> tuple[str, list[dict]]:
    name, sep, entries = text.partition("=")
    try:
        parsed = json.loads(entries)
    except json.JSONDecodeError:
        parsed = None
    if not sep or not name or not isinstance(parsed, list):
        raise SystemExit(f"--recipe {text}: expected NAME='[{{\"algorithm\": ...}}, ...]'")
    return name, parsed


if __name__ == "__main__":
    sys.exit(main())
