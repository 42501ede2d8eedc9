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
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nncf_lossless.checkpoint import write_json
from nncf_lossless.trainer import REFERENCE, run

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
    rows: dict[str, dict] = {name: {"compression": [INT4, *extra], "runs": []} for name, extra in recipes.items()}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            first = Path(tmp) / f"{next(iter(recipes))}-{seed}"
            for name, row in rows.items():
                config = {**base, "compression": row["compression"],
                          "training": {**base["training"], "seed": seed, "epochs": args.epochs}}
                if name != next(iter(recipes)):  # every recipe of a seed compresses the very same reference
                    config["model"] = {**base["model"], "checkpoint": str(first / REFERENCE)}
                started = time.perf_counter()
                results = run(config, Path(tmp) / f"{name}-{seed}")
                f32 = next(r for r in results["openvino"]["runs"] if r["requested_precision"] == "f32")
                row["runs"].append({
                    "seed": seed,
                    "reference_accuracy": results["reference"]["accuracy"],
                    "compressed_accuracy": results["compressed"]["accuracy"],
                    "mismatches": results["mismatches"],
                    "mismatches_reference_correct": results["mismatches_reference_correct"],
                    "ir_f32_mismatches": f32["mismatches"],
                    "mismatches_by_epoch": [h["mismatches"] for h in results["history"]],
                    "frozen_bn": results["statistics"].get("frozen_bn"),
                    "num_samples": results["num_samples"],
                    "wall_seconds": time.perf_counter() - started,
                })
                print(name, row["runs"][-1], file=sys.stderr)
    for row in rows.values():
        row["mismatches_mean"] = statistics.mean(r["mismatches"] for r in row["runs"])
        row["ir_f32_mismatches_mean"] = statistics.mean(r["ir_f32_mismatches"] for r in row["runs"])
    report = {"seeds": args.seeds, "epochs": args.epochs, "lr": base["training"]["lr"], "recipes": rows}
    write_json(report, args.output)
    plot(rows, args.output.with_suffix(".png"))
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


def plot(rows: dict, path: Path) -> None:
    names = list(rows)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for x, name in enumerate(names):
        runs = rows[name]["runs"]
        ax.bar(x, rows[name]["mismatches_mean"], width=0.6, color="tab:blue", alpha=0.6)
        ax.scatter([x] * len(runs), [r["mismatches"] for r in runs], color="black", s=12, zorder=3)
    ax.set_xticks(range(len(names)), names)
    first = next(iter(rows.values()))["runs"][0]
    ax.set_ylabel(f"mismatches of {first['num_samples']} (mean, dots: seeds)")
    ax.set_title("4-bit QAT on digits: label flips vs FP32 reference")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
