"""The ``repair`` command: arguments, a summary table, exit codes (0 budget met, 1 not met, 2 user error)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RESTORE_MODES = ("activations_and_weights", "only_activations")  # kept in sync with surgery.RESTORE_MODES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", required=True, type=Path, help="the FP32 reference IR (.xml): the labels to agree with")
    p.add_argument("--compressed", required=True, type=Path, help="the compressed IR (.xml) with FakeQuantize ops")
    p.add_argument("--data", required=True, type=Path, help="validation .npz ('inputs', 'labels'): the search runs on it")
    p.add_argument("--test", type=Path, help="test .npz, only measured before and after (never searched on)")
    p.add_argument("--max-mismatches", required=True, type=int, metavar="N",
                   help="the budget: at most N validation samples may disagree with the reference")
    p.add_argument("--device", default="CPU", help="the OpenVINO device the repaired IR is for (default CPU)")
    p.add_argument("--precision", choices=("f32", "default"), default="f32",
                   help="inference precision of the compressed IR on the device (default f32; the reference is always CPU f32)")
    p.add_argument("--restore-mode", choices=RESTORE_MODES, default="activations_and_weights",
                   help="a reverted layer also takes the reference IR's weights and bias (default), or keeps its quantized ones")
    p.add_argument("--no-prune", action="store_true", help="keep every greedy revert (skip the pass that puts unneeded ones back)")
    p.add_argument("--ranking-subset-size", type=int, default=300, metavar="K",
                   help="rank groups on K validation samples, the mismatched ones first (NNCF's default 300; 0: all)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per inference request (default 8, as check)")
    p.add_argument("--output-dir", required=True, type=Path, help="where repaired.xml/.bin, repair.json and repair.png go")


def _samples(path: Path, option: str):
    from nncf_lossless.checker.core import load_samples
    from nncf_lossless.checker.errors import DataError

    try:
        return load_samples(path)
    except DataError as err:
        raise DataError(str(err).replace("--data:", f"{option}:", 1)) from err


def command(args: argparse.Namespace) -> int:
    from nncf_lossless.checker.cli import progress_bars

    from .run import REPORT, repair

    validation = _samples(args.data, "--data")
    test = _samples(args.test, "--test") if args.test else None
    sources = {"validation": str(args.data), **({"test": str(args.test)} if args.test else {})}
    with progress_bars() as progress:
        report = repair(args.reference, args.compressed, validation, args.output_dir, max_mismatches=args.max_mismatches,
                        test=test, device=args.device, precision=None if args.precision == "default" else args.precision,
                        restore_mode=args.restore_mode, batch_size=args.batch_size, prune=not args.no_prune,
                        ranking_subset_size=args.ranking_subset_size,
                        progress=progress, sources=sources)
    print_summary(report)
    print(f"report: {args.output_dir / REPORT}" + (f", repaired IR: {report['repaired']}" if report["repaired"] else ""))
    if not report["budget_met"]:
        print(f"error: budget not met: {report['search_validation_mismatches']['after']} validation mismatches > "
              f"{report['max_mismatches']} with every quantizer group in float; no repaired IR written", file=sys.stderr)
        return 1
    return 0


def print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"repair on {report['device']} {report['requested_precision']}: "
                        f"{len(report['reverted_groups'])} of {report['num_groups']} quantizer groups in float")
    for col in ("data", "samples", "mismatches before", "after"):
        table.add_column(col, justify="right")
    for split in ("validation", "test"):
        m = report.get(split)
        if m:
            table.add_row(split, str(m["num_samples"]), str(m["compressed"]["mismatches"]),
                          str(m["repaired"]["mismatches"]) if "repaired" in m else "-")
    Console().print(table)
    for split in ("validation", "test"):
        for name, m in (report.get(split) or {}).items():
            if isinstance(m, dict) and m.get("throughput_labels_differ_from_one_stream"):
                print(f"warning: {split}: the {name} IR gives {m['throughput_labels_differ_from_one_stream']} other labels "
                      f"with THROUGHPUT streams than with one ({m['throughput_mismatches']} mismatches, not "
                      f"{m['mismatches']}): deploy it with one stream or report it to OpenVINO")
    tp = report["throughput"]
    speed = ", ".join(f"{name} {ips:.0f}" for name, ips in tp["images_per_second"].items())
    print(f"images/s (best of {tp['repeats']}, {tp['num_samples']} samples): {speed}")
    print(f"reverted layers: {', '.join(report['reverted_layer_labels']) or 'none'}")
