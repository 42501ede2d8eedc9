"""The plot of a repair: validation flips against throughput along the revert order (matplotlib optional)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_repair(report: dict[str, Any], path: Path) -> bool:
    """Writes the PNG; False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = [s for s in report["steps"] if "pruned" not in s]
    pruned = [s for s in report["steps"] if "pruned" in s]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = [len(s["reverted_groups"]) for s in steps]
    ax1.plot(xs, [s["validation_mismatches"] for s in steps], "o-", label="greedy, rank order")
    if pruned:
        ax1.plot([len(s["reverted_groups"]) for s in pruned], [s["validation_mismatches"] for s in pruned], "s",
                 label="after putting back unneeded groups")
    ax1.axhline(report["max_mismatches"], color="gray", ls="--", label=f"budget {report['max_mismatches']}")
    ax1.set(xlabel="quantizer groups in float", ylabel="validation mismatches", title="flips along the revert order")
    ax1.legend()
    speeds = [s["images_per_second"] or 0 for s in steps]
    ax2.plot(speeds, [s["validation_mismatches"] for s in steps], "o-")
    for s, x in zip(steps, speeds):
        ax2.annotate(str(len(s["reverted_groups"])), (x, s["validation_mismatches"]), fontsize=7)
    fp32 = report.get("throughput", {}).get("images_per_second", {}).get("fp32_reference")
    if fp32:
        ax2.axvline(fp32, color="gray", ls=":", label=f"FP32 IR {fp32:.0f} img/s")
        ax2.legend()
    ax2.set(xlabel="images/s during the validation pass (noisy)", ylabel="validation mismatches",
            title="flips vs throughput (labels: groups in float)")
    fig.suptitle(f"repair of {Path(report['compressed']).name} on {report['device']} {report['requested_precision']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
