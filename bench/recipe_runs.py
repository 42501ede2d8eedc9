"""Shared by the recipe benchmarks: run compression recipes on one reference per seed, summarise, plot.

A recipe is a list of compression entries. For each seed the first recipe trains the FP32 reference
and every other recipe compresses that very checkpoint, so recipes differ only in their entries.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nncf_lossless.training.reference import REFERENCE
from nncf_lossless.training.trainer import run


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The fields every benchmark reports from a trainer run's ``results.json`` content."""
    f32 = next(r for r in results["openvino"]["runs"] if r["requested_precision"] == "f32")
    return {
        "reference_accuracy": results["reference"]["accuracy"],
        "compressed_accuracy": results["compressed"]["accuracy"],
        "mismatches": results["mismatches"],
        "mismatches_reference_correct": results["mismatches_reference_correct"],
        "ir_f32_mismatches": f32["mismatches"],
        "ir_f32_compressed_accuracy": f32["compressed"]["accuracy"],
        "torch_vs_ir_top1_disagreements": f32["source_vs_ir"]["compressed"]["top1_disagreements"],
        "num_samples": results["num_samples"],
    }


def run_recipes(base: dict[str, Any], recipes: dict[str, list[dict]], seeds: list[int], epochs: int,
                workdir: Path, extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, dict]:
    """Runs every recipe for every seed; returns ``{name: {"compression", "runs", "<field>_mean"}}``.

    ``extra(results)`` adds recipe-specific fields to a run's row.
    """
    rows: dict[str, dict] = {name: {"compression": entries, "runs": []} for name, entries in recipes.items()}
    first_name = next(iter(recipes))
    for seed in seeds:
        for name, row in rows.items():
            config = {**base, "compression": row["compression"],
                      "training": {**base["training"], "seed": seed, "epochs": epochs}}
            if name != first_name:
                config["model"] = {**base["model"], "checkpoint": str(workdir / f"{first_name}-{seed}" / REFERENCE)}
            started = time.perf_counter()
            results = run(config, workdir / f"{name}-{seed}")
            row["runs"].append({"seed": seed, **summarize(results), **(extra(results) if extra else {}),
                                "wall_seconds": time.perf_counter() - started})
            print(name, row["runs"][-1], file=sys.stderr)
    for row in rows.values():
        for key in ("mismatches", "ir_f32_mismatches", "compressed_accuracy"):
            row[f"{key}_mean"] = statistics.mean(r[key] for r in row["runs"])
    return rows


def plot_seed_bars(rows: dict[str, dict], path: Path, title: str) -> None:
    """Bar per recipe at its mean mismatches, a dot per seed."""
    names = list(rows)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 3.5))
    for x, name in enumerate(names):
        runs = rows[name]["runs"]
        ax.bar(x, rows[name]["mismatches_mean"], width=0.6, color="tab:blue", alpha=0.6)
        ax.scatter([x] * len(runs), [r["mismatches"] for r in runs], color="black", s=12, zorder=3)
    ax.set_xticks(range(len(names)), names)
    first = next(iter(rows.values()))["runs"][0]
    ax.set_ylabel(f"mismatches of {first['num_samples']} (mean, dots: seeds)")
    ax.set_title(f"{title}: label flips vs FP32 reference")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
