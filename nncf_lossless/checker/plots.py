"""Plots of a consistency report: flip-matrix heatmap, flips per class, margins of flipped vs kept.

Needs matplotlib, which portable bundles may lack: :func:`plot_report` returns ``[]`` then.
No torch, relative imports only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per run (three panels) into ``out_dir``; ``[]`` when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run in report["runs"]:
        fig = run_figure(run, plt, np)
        path = out_dir / f"{Path(run['model']).stem}_{run['device']}_{run['requested_precision']}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def run_figure(run: dict[str, Any], plt: Any, np: Any) -> Any:
    """The three-panel figure of one run (matplotlib's ``pyplot`` and numpy passed in: both optional here)."""
    flips = np.array(run["flip_matrix"])
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    off = flips.copy()
    np.fill_diagonal(off, 0)
    ax1.set(title="flips (diagonal hidden)", xlabel="compressed class", ylabel="reference class")
    if off.any():
        im = ax1.imshow(off, cmap="Reds")
        fig.colorbar(im, ax=ax1)
    else:  # an all-zero heatmap is a solid square with a meaningless -0.1..0.1 colour bar
        ax1.set(xticks=[], yticks=[])
        ax1.text(0.5, 0.5, "no flips", ha="center", va="center", fontsize=16, transform=ax1.transAxes)
    ax2.bar(range(len(off)), off.sum(1), label="from class (reference)")
    ax2.bar(range(len(off)), -off.sum(0), label="to class (compressed)")
    ax2.set(title="flips per class", xlabel="class")
    ax2.legend()
    hist = run["margin_histogram"]
    edges = np.array(hist["bin_edges"])
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    kept = np.array(hist["kept"], dtype=float)
    flipped = np.array(hist["flipped"], dtype=float)
    ax3.bar(centers, kept / max(kept.sum(), 1), width, alpha=0.5, label=f"kept ({int(kept.sum())})")
    ax3.bar(centers, flipped / max(flipped.sum(), 1), width, alpha=0.7, label=f"flipped ({int(flipped.sum())})")
    ax3.set(title="reference top-1 margin", xlabel="logit margin", ylabel="fraction")
    ax3.legend()
    fig.suptitle(f"{Path(run['model']).name} on {run['device']} {run['precision']}: {run['mismatches']} mismatches")
    fig.tight_layout()
    return fig
