"""Markdown summaries of consistency reports, and merging reports from several machines.

No torch, relative imports only (copied into portable bundles).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import DataError

COLUMNS = ("host", "model", "device", "precision", "ref acc", "comp acc", "mismatches", "ref-right",
           "THROUGHPUT mismatches", "top-k agree", "max drift", "img/s")


def _parallel(run: dict[str, Any]) -> str:
    """The THROUGHPUT pass in a cell; labels that differ from the one-stream run are shouted about."""
    tp = run.get("throughput")
    if not tp:
        return "-"
    cell = f"{tp['mismatches']} ({tp['streams']} streams)"
    differ = tp["labels_differ_from_one_stream"]
    return cell + (f" **{differ} labels differ from 1 stream**" if differ else "")


def _row(host: str, run: dict[str, Any]) -> list[str]:
    precision = run["precision"] if run["requested_precision"] == run["precision"] else \
        f"{run['precision']} (asked {run['requested_precision']})"
    return [host, Path(run["model"]).name, run["device"], precision,
            f"{100 * run['reference']['accuracy']:.2f}%", f"{100 * run['compressed']['accuracy']:.2f}%",
            str(run["mismatches"]), str(run["mismatches_reference_correct"]), _parallel(run),
            f"{100 * run['top_k']['reference_top1_in_compressed_topk']:.2f}% (k={run['top_k']['k']})",
            f"{run['drift']['max_abs_diff']:.4g}",
            f"{run['images_per_second']:.0f}" if run.get("images_per_second") else "-"]


def _table(rows: list[list[str]], columns: Sequence[str] = COLUMNS) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _absent_rows(host: str, report: dict[str, Any]) -> list[list[str]]:
    return [[host, "-", d, "absent", *["-"] * (len(COLUMNS) - 4)]
            for d, s in report["devices"].items() if s == "absent"]


def to_markdown(report: dict[str, Any], max_flips: int = 20) -> str:
    """A human summary: one table row per run, absent devices, and the first flipped samples."""
    ref = report["reference"]
    lines = [
        f"# Label consistency on {report['host']} (OpenVINO {report['openvino']})", "",
        (f"{report['num_samples']} samples. Ground truth: reference `{Path(ref['path']).name}` "
        f"({ref['ground_truth']}; ran in {ref['precision']} on {', '.join(ref['execution_devices'])})."),
        ("A mismatch is a sample whose compressed top-1 differs from the reference top-1 (one stream); "
        "ref-right counts those the reference had right; THROUGHPUT mismatches are the same count with the "
        "THROUGHPUT hint's parallel streams, which should agree with one stream."), "",
    ]
    lines += _table([_row(report["host"], r) for r in report["runs"]] + _absent_rows(report["host"], report))
    if "reference_reproduction" in report:
        rr = report["reference_reproduction"]
        lines += ["", (f"Reference on this machine vs the stored reference outputs: {rr['mismatches']} top-1 "
                  f"changes, max abs diff {rr['drift']['max_abs_diff']:.4g}.")]
    names = report.get("metadata", {}).get("class_names") or []

    def name(c: int) -> str:
        return f"{c} ({names[c]})" if c < len(names) else str(c)

    for run in report["runs"]:
        if not run["flips"]:
            continue
        lines += ["", f"## Flips: {Path(run['model']).name} on {run['device']} {run['precision']}", "",
                  "| id | label | reference | compressed | ref margin | comp margin |", "|---|---|---|---|---|---|"]
        lines += [f"| {f['id']} | {name(f['label'])} | {name(f['reference'])} | {name(f['compressed'])} | "
                  f"{f['reference_margin']:.4g} | {f['compressed_margin']:.4g} |" for f in run["flips"][:max_flips]]
        if len(run["flips"]) > max_flips:
            lines.append(f"\n... and {len(run['flips']) - max_flips} more in the JSON report.")
    return "\n".join(lines) + "\n"


def merge(reports: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> dict[str, Any]:
    """One table from several machines' reports; they must have checked the same samples."""
    names = names or [str(i) for i in range(len(reports))]
    rows = []
    for name, report in zip(names, reports):
        if not isinstance(report, dict) or "runs" not in report or "devices" not in report:
            raise DataError(f"{name}: not a consistency report (no 'runs'/'devices')")
        if report["num_samples"] != reports[0]["num_samples"]:
            raise DataError(f"{name}: {report['num_samples']} samples, but {names[0]} has {reports[0]['num_samples']}")
        for run in report["runs"]:
            rows.append({"host": report["host"], "openvino": report["openvino"], "report": name,
                         **{k: run[k] for k in ("model", "device", "requested_precision", "precision",
                                                "execution_devices", "mismatches", "mismatches_reference_correct",
                                                "mismatch_ids", "reference", "compressed", "top_k", "drift")},
                         "images_per_second": run.get("images_per_second"),
                         **({"throughput": run["throughput"]} if "throughput" in run else {})})
        rows += [{"host": report["host"], "report": name, "device": d, "status": "absent"}
                 for d, s in report["devices"].items() if s == "absent"]
    return {"num_samples": reports[0]["num_samples"] if reports else 0, "rows": rows}


def merged_markdown(merged: dict[str, Any]) -> str:
    """The merged table; each row starts with the report it came from (one host may give several)."""
    rows = []
    for r in merged["rows"]:
        if r.get("status") == "absent":
            row = [r["host"], "-", r["device"], "absent", *["-"] * (len(COLUMNS) - 4)]
        else:
            row = _row(r["host"], r)
        rows.append([r.get("report", "-"), *row])
    return "\n".join([f"# Label consistency across machines ({merged['num_samples']} samples)", "",
                      *_table(rows, ("report", *COLUMNS))]) + "\n"
