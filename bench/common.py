"""What the CIFAR-10 benchmark scripts share: headless plotting, quiet extension logs, the common options,
one-line errors, and the two-panel "flips and accuracy per row" plot.

Import it before ``matplotlib.pyplot``: importing it selects the Agg backend, because benchmarks run on
machines without a display.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
# torch warns about a missing CUDA runtime when NNCF loads its CPU extension; errors stay one line.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
import matplotlib.pyplot as plt

from nncf_lossless.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "configs" / "cifar10_resnet20_int8.json"
REFERENCE = ROOT / "bench" / "cache" / "cifar10_resnet20_fp32.pt"


def parser(doc: str, name: str, *, data: Path | None = None) -> argparse.ArgumentParser:
    """An argument parser with the options every CIFAR-10 benchmark takes.

    ``--workdir`` defaults to ``bench/runs/<name>`` and ``--output`` to ``bench/results/<name>.json``.
    """
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--data", type=Path, default=data, help="CIFAR-10 as train/<class>, test/<class> (folder or .zip)")
    p.add_argument("--reference", type=Path, default=REFERENCE, help="the cached FP32 reference checkpoint")
    p.add_argument("--report-only", action="store_true", help="rewrite the table and plot from --output")
    p.add_argument("--workdir", type=Path, default=ROOT / "bench" / "runs" / name)
    p.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / f"{name}.json")
    return p


def require_data(args: argparse.Namespace) -> None:
    """Raise a one-line :class:`UserError` unless ``--data`` names something that exists."""
    if args.data is None or not args.data.exists():
        raise UserError(f"--data: give the CIFAR-10 folder or zip (e.g. ../shared/data/cifar10-jpeg.zip); got {args.data}")


def run_main(bench: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``bench(args)``, with a :class:`UserError` printed as one line and exit status 2."""
    try:
        return bench(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def cpu_letters(rows: dict[str, dict[str, Any]]) -> tuple[Callable[[dict[str, Any]], str], list[str]]:
    """Results files accumulate rows from several machines, each row keeping its ``cpu_flags``: a letter per
    distinct flag set (A, B, ... in row order) for a table column, and the legend lines naming each letter."""
    def key(row: dict[str, Any]) -> str:
        return ", ".join(row.get("cpu_flags", [])) or "unknown"

    letters = {k: chr(ord("A") + i) for i, k in enumerate(dict.fromkeys(key(r) for r in rows.values()))}
    return (lambda row: letters[key(row)]), [f"CPU {n}: {flags}" for flags, n in letters.items()]


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically (a reader never sees half a PNG) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def flips_plot(rows: dict[str, dict[str, Any]], path: Path, title: str, *, colors: list[Any] | None = None,
               decorate: Callable[[Any, list[int]], None] | None = None) -> None:
    """Left: test mismatches per row on the IRs (bars f32, dots the CPU's default precision); right: accuracy
    change vs the FP32 reference with the 0.3-point line.

    Every row needs ``ir.f32`` / ``ir.default`` with ``mismatches``, ``compressed_accuracy`` and
    ``reference_accuracy``, and ``num_samples``. ``decorate(ax, ys)`` may add marks to the left panel.
    """
    if not rows:
        return
    names = list(rows)
    colors = colors or ["tab:blue"] * len(names)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.8), sharey=True)
    ys = list(range(len(names)))
    ax1.barh(ys, [rows[n]["ir"]["f32"]["mismatches"] for n in names], color=colors)
    ax1.scatter([rows[n]["ir"]["default"]["mismatches"] for n in names], ys, color="black", s=12, zorder=3,
                label=f"CPU default precision ({rows[names[0]]['ir']['default'].get('precision', '?')})")
    if decorate:
        decorate(ax1, ys)
    ax1.set_yticks(ys, names)
    ax1.invert_yaxis()
    ax1.set_xlabel(f"test mismatches of {rows[names[0]]['num_samples']} (bars: OpenVINO CPU f32)")
    ax1.legend(loc="lower right")
    deltas = [100 * (rows[n]["ir"]["f32"]["compressed_accuracy"] - rows[n]["ir"]["f32"]["reference_accuracy"]) for n in names]
    ax2.barh(ys, deltas, color=colors)
    ax2.axvline(-0.3, color="grey", linestyle="--", linewidth=1)
    ax2.set_xlabel("accuracy vs FP32 reference (points, IR f32); dashed: -0.3")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
