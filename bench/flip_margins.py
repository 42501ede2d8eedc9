"""Which images flip: each row's development-split flips by how sure the FP32 reference is of its label.

    python bench/flip_margins.py --data ../shared/data/cifar10-jpeg.zip --rows int8_qat int8_mse_fbn_hist5k

For finished ``bench/flip_first.py`` rows, both IRs run on OpenVINO CPU in f32 over the development split
of ``bench/flip_first_dev.py`` (the 43,000 training images no row trained or selected on; never the test
set). Each image gets the reference's margin, its top-1 minus top-2 softmax probability; flips are counted
per margin bin. A recipe that only removes flips among near-ties is at the floor any quantized model
meets; one that leaves flips at large margins has room left. Writes ``bench/results/flip_margins.json``
and a plot of the flip rate per bin (``.png``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import common
import numpy as np
from cpu_flags import cpu_flags
from flip_first_dev import RUNS, development_split

from nncf_lossless.checker.atomic import write_json
from nncf_lossless.checker.ov_runner import compile_ir, infer
from nncf_lossless.config import load_config

EDGES = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0000001]


def main() -> int:
    parser = common.parser(__doc__, "flip_margins")
    parser.add_argument("--runs", type=Path, default=RUNS, help="the flip-first bench's run directories")
    parser.add_argument("--rows", nargs="+", default=["int8_qat", "int8_mse_fbn_hist5k"], help="finished flip-first rows")
    return common.run_main(bench, parser.parse_args())


def margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 softmax probability per row of ``logits``."""
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    top2 = np.sort(p, 1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def by_bin(margin: np.ndarray, flipped: np.ndarray) -> list[dict[str, Any]]:
    bins = np.digitize(margin, EDGES[1:-1])
    return [{"margin_from": EDGES[b], "margin_to": min(EDGES[b + 1], 1.0), "images": int((bins == b).sum()),
             "flips": int(flipped[bins == b].sum())} for b in range(len(EDGES) - 1)]


def bench(args: argparse.Namespace) -> int:
    common.require_data(args)
    report: dict[str, Any] = {"cpu_flags": cpu_flags(), "edges": EDGES[:-1] + [1.0], "rows": {}}
    dev = None
    for name in args.rows:
        ir = args.runs / name / "ir"
        if not (ir / "compressed.xml").exists():
            raise common.UserError(f"--rows: {name} has no exported IR under {ir}")
        config = load_config(args.runs / name / "config.json")
        if dev is None or dev[0] != config["dataset"]:
            dev = (config["dataset"], *development_split(config))
        _, x, _, _ = dev
        ref_logits = infer(compile_ir(ir / "reference.xml"), x, 256)
        flipped = ref_logits.argmax(1) != infer(compile_ir(ir / "compressed.xml"), x, 256).argmax(1)
        report["rows"][name] = {"dev_size": len(x), "dev_mismatches": int(flipped.sum()),
                                "bins": by_bin(margins(ref_logits), flipped)}
        print(f"{name}: {int(flipped.sum())} flips; per margin bin "
              f"{[b['flips'] for b in report['rows'][name]['bins']]}", file=sys.stderr)
    write_json(report, args.output)
    plot(report, args.output.with_suffix(".png"))
    print(f"wrote {args.output} (+ .png)", file=sys.stderr)
    return 0


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    rows = report["rows"]
    width = 0.8 / max(len(rows), 1)
    for i, (name, row) in enumerate(rows.items()):
        rates = [100 * b["flips"] / max(b["images"], 1) for b in row["bins"]]
        ax.bar(np.arange(len(rates)) + i * width, rates, width, label=f"{name} ({row['dev_mismatches']} flips)")
    first = next(iter(rows.values()))["bins"]
    ax.set_xticks(np.arange(len(first)) + width * (len(rows) - 1) / 2,
                  [f"{b['margin_from']:g}-{b['margin_to']:g}\n({b['images']} imgs)" for b in first], fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("reference margin (top-1 minus top-2 probability)")
    ax.set_ylabel("flipped, % of the bin's images")
    ax.set_title(f"Development-split flips by reference margin ({', '.join(report['cpu_flags'])})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
