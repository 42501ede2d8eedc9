"""The ``check`` command, shared by ``nncf-lossless check`` and a bundle's ``check_bundle.py``.

No torch, relative imports only (copied into portable bundles). Exit codes: 0 ok, 1 a run has
more than ``--max-mismatches`` mismatches (the release gate), 2 a user error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_json, write_text
from .core import STREAM_MODES, exceeding, load_samples, run_check, worst_mismatches
from .errors import DataError, UserError
from .plots import plot_report
from .reports import merge, merged_markdown, to_markdown

BUNDLE_MANIFEST = "bundle.json"
REPORT_JSON = "consistency.json"
REPORT_MD = "consistency.md"


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options common to ``check`` and a bundle's script: where to run and the gate."""
    p.add_argument("--devices", nargs="+", metavar="DEVICE",
                   help="OpenVINO devices (default: every device OpenVINO reports here)")
    p.add_argument("--precisions", nargs="+", metavar="PRECISION", choices=("f32", "f16", "bf16", "default"),
                   help="inference precision modes (default per device: CPU f32+default, GPU default+f32, NPU default)")
    p.add_argument("--skip-missing", action="store_true", help="list named devices that are absent instead of failing")
    p.add_argument("--max-mismatches", type=int, metavar="N",
                   help="release gate: exit with status 1 if any run has more than N mismatches")
    p.add_argument("--streams", choices=STREAM_MODES, default="both",
                   help="count mismatches with one stream only, or also with the THROUGHPUT hint's streams "
                        "(default both; the gate takes the worse)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per inference request (default 8)")
    p.add_argument("--top-k", type=int, default=5, help="k of the top-k agreement (default 5)")
    p.add_argument("--output-dir", type=Path, default=Path("consistency"), help="where the reports go")


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", required=True, type=Path, help="the FP32 reference IR (.xml)")
    p.add_argument("--compressed", required=True, type=Path, nargs="+", help="compressed IR(s) (.xml)")
    p.add_argument("--data", required=True, type=Path, help=".npz with 'inputs' (N, ...) float32 and 'labels' (N,)")
    add_run_arguments(p)


@contextmanager
def progress_bars() -> Iterator[Any]:
    """A ``progress(title, total)`` factory backed by rich, or ``None`` when rich is not installed."""
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=False) as bars:
        def start(title: str, total: int) -> Any:
            task = bars.add_task(title, total=total)
            return lambda n: bars.advance(task, n)

        yield start


def finish(report: dict[str, Any], args: argparse.Namespace) -> int:
    """Writes the JSON, Markdown and plots, prints the summary and applies the release gate."""
    out: Path = args.output_dir
    write_json(report, out / REPORT_JSON)
    markdown = to_markdown(report)
    write_text(markdown, out / REPORT_MD)
    plots = plot_report(report, out / "plots")
    print(markdown)
    print(f"report: {out / REPORT_JSON}, {out / REPORT_MD}" + (f", {len(plots)} plots in {out / 'plots'}" if plots else ""))
    if args.max_mismatches is not None:
        failing = exceeding(report, args.max_mismatches)
        for run in failing:
            where = "" if run["mismatches"] == worst_mismatches(run) else " with THROUGHPUT streams"
            print(f"gate: {Path(run['model']).name} on {run['device']} {run['precision']}: "
                  f"{worst_mismatches(run)} mismatches{where} > {args.max_mismatches}", file=sys.stderr)
        if failing:
            return 1
    return 0


def _run(args: argparse.Namespace, reference: Path, compressed: Sequence[Path], data: Path,
         reference_logits: np.ndarray | None = None) -> int:
    inputs, labels = load_samples(data)
    with progress_bars() as progress:
        report = run_check(reference, compressed, inputs, labels, devices=args.devices, precisions=args.precisions,
                           skip_missing=args.skip_missing, reference_logits=reference_logits,
                           batch_size=args.batch_size, top_k=args.top_k, streams=args.streams, progress=progress)
    return finish(report, args)


def check_command(args: argparse.Namespace) -> int:
    return _run(args, args.reference, args.compressed, args.data)


def merge_command(args: argparse.Namespace) -> int:
    reports = []
    for path in args.reports:
        try:
            reports.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable JSON report ({err})") from err
    merged = merge(reports, [str(p) for p in args.reports])
    write_json(merged, args.output_dir / "merged.json")
    markdown = merged_markdown(merged)
    write_text(markdown, args.output_dir / "merged.md")
    print(markdown)
    print(f"merged: {args.output_dir / 'merged.json'}, {args.output_dir / 'merged.md'}")
    return 0


def bundle_main(bundle_dir: Path, argv: Sequence[str] | None = None) -> int:
    """Entry point of a bundle's ``check_bundle.py``: checks the bundled IRs against the stored reference."""
    parser = argparse.ArgumentParser(prog="check_bundle.py", description="Label consistency of this bundle's IRs "
                                     "against the stored FP32 reference outputs, on this machine's OpenVINO devices.")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    try:
        manifest = json.loads((bundle_dir / BUNDLE_MANIFEST).read_text())
        with np.load(bundle_dir / manifest["reference_outputs"], allow_pickle=False) as npz:
            reference_logits = npz["logits"]
        return _run(args, bundle_dir / manifest["reference"], [bundle_dir / c for c in manifest["compressed"]],
                    bundle_dir / manifest["data"], reference_logits)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
