"""Baseline recipes on digits: mismatches each leaves, in PyTorch and on OpenVINO CPU.

    python bench/digits_recipes.py [--output bench/results/digits_recipes.json] [--seed 0]

Runs the built-in trainer with the same reference, budget and seed for: INT8 QAT, 4-bit QAT,
50% magnitude pruning, and 50% pruning + INT8. Writes JSON (one entry per recipe) and a bar
plot of the mismatches next to it. The label-preserving recipes of later releases are measured
against these rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from recipe_runs import summarize

from nncf_lossless.checkpoint import write_json
from nncf_lossless.training.reference import REFERENCE
from nncf_lossless.training.trainer import run

RECIPES = {
    "int8_qat": [{"algorithm": "quantization"}],
    "int4_qat": [{"algorithm": "quantization", "weights": {"bits": 4}, "activations": {"bits": 4}}],
    "pruning_50": [{"algorithm": "pruning", "ratio": 0.5}],
    "pruning_50_int8": [{"algorithm": "pruning", "ratio": 0.5}, {"algorithm": "quantization"}],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench/results/digits_recipes.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    base = json.loads((Path(__file__).resolve().parents[1] / "configs" / "digits_int8.json").read_text())
    base["training"].update(seed=args.seed, epochs=args.epochs)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp) / next(iter(RECIPES))
        for name, compression in RECIPES.items():
            config = {**base, "compression": compression}
            if name != first.name:  # every recipe compresses the very same reference
                config["model"] = {**base["model"], "checkpoint": str(first / REFERENCE)}
            started = time.perf_counter()
            results = run(config, Path(tmp) / name)
            rows[name] = {**summarize(results), "wall_seconds": time.perf_counter() - started}
            print(name, rows[name], file=sys.stderr)
    report = {"seed": args.seed, "epochs": args.epochs, "recipes": rows}
    write_json(report, args.output)
    plot(rows, args.output.with_suffix(".png"))
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")
    return 0


def plot(rows: dict, path: Path) -> None:
    names = list(rows)
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([x - 0.2 for x in xs], [rows[n]["mismatches"] for n in names], width=0.4, label="PyTorch")
    ax.bar([x + 0.2 for x in xs], [rows[n]["ir_f32_mismatches"] for n in names], width=0.4, label="OpenVINO CPU f32")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel(f"mismatches of {next(iter(rows.values()))['num_samples']}")
    ax.set_title("Label flips vs FP32 reference, digits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
