"""Flip-first rows scored on a development split: the training images no row trained or selected on.

    python bench/flip_first_dev.py --data ../shared/data/cifar10-jpeg.zip

Every flip-first row fine-tunes on the same 5,000 training images and selects on the same 2,000
validation images (``bench/flip_first.py``'s budget), which leaves 43,000 training images no row has
used. Their mismatches are a judge between *recipes* (selected epoch or last, one calibration or
another) that is 20x larger than the validation split, so recipes need not be told apart on the test
set. The FP32 reference was trained on these images too (as on the validation split): its labels there
are surer than on the test set, so the counts are lower than the test's, and only comparisons between
rows mean anything.

For each finished row (``bench/runs/flip_first/<row>/ir``) both IRs run on OpenVINO CPU in f32 over
the development images; rows are cached by the IRs' size and modification time. Writes
``bench/results/flip_first_dev.json`` and ``.md``: per row, then mean and spread per row base.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch

from nncf_lossless.checker.atomic import write_json, write_text
from nncf_lossless.checker.ov_runner import compile_ir, infer
from nncf_lossless.config import load_config
from nncf_lossless.data import load_dataset

RUNS = common.ROOT / "bench" / "runs" / "flip_first"


def main() -> int:
    parser = common.parser(__doc__, "flip_first_dev")
    parser.add_argument("--runs", type=Path, default=RUNS, help="the flip-first bench's run directories")
    parser.add_argument("--only", nargs="+", help="rows to score (default: every finished row)")
    return common.run_main(bench, parser.parse_args())


def development_split(config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, labels, ids) of the training images outside the run's fine-tuning subset and validation split."""
    used = load_dataset(config["dataset"])
    everything = load_dataset({**config["dataset"], "max_train_samples": None})
    assert (used.split_ids["validation"] == everything.split_ids["validation"]).all()
    keep = ~np.isin(everything.split_ids["train"], used.split_ids["train"])
    pool = everything.calibration  # the training images without augmentation
    index = np.flatnonzero(keep)
    x = torch.stack([pool[int(i)][0] for i in index])
    return x.numpy(), pool.labels[torch.from_numpy(index)].numpy(), everything.split_ids["train"][keep]


def _stamp(ir: Path) -> list[Any]:
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(ir.glob("*.bin"))]


def bench(args: argparse.Namespace) -> int:
    report = json.loads(args.output.read_text()) if args.output.exists() else {"rows": {}}
    names = args.only or sorted(p.parent.parent.name for p in args.runs.glob("*/ir/compressed.xml"))
    if not args.report_only:
        dev = None
        for name in names:
            ir = args.runs / name / "ir"
            if not (ir / "compressed.xml").exists():
                raise common.UserError(f"--only: {name} has no exported IR under {ir}")
            if report["rows"].get(name, {}).get("stamp") == _stamp(ir):
                continue
            config = load_config(args.runs / name / "config.json")
            if dev is None or dev[0] != config["dataset"]:
                dev = (config["dataset"], *development_split(config))
            _, x, y, ids = dev
            ref = infer(compile_ir(ir / "reference.xml"), x, 256).argmax(1)
            comp = infer(compile_ir(ir / "compressed.xml"), x, 256).argmax(1)
            report["rows"][name] = {"stamp": _stamp(ir), "dev_size": len(y), "dev_mismatches": int((ref != comp).sum()),
                                    "compressed_accuracy": float((comp == y).mean()),
                                    "reference_accuracy": float((ref == y).mean()),
                                    "dev_ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest()[:16]}
            print(f"{name}: {report['rows'][name]['dev_mismatches']} of {len(y)} development images flipped",
                  file=sys.stderr)
            report["description"] = __doc__.split("\n\n")[2].replace("\n", " ")
            write_json(report, args.output)
    write_text(table(report), args.output.with_suffix(".md"))
    print(f"wrote {args.output} (+ .md)", file=sys.stderr)
    return 0


def table(report: dict[str, Any]) -> str:
    rows = report["rows"]
    lines = ["| row | development mismatches (IR f32) | of | compressed acc % |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {r['dev_mismatches']} | {r['dev_size']} | {100 * r['compressed_accuracy']:.2f} |"
              for n, r in sorted(rows.items())]
    bases: dict[str, list[int]] = {}
    for n, r in rows.items():
        base = n.rsplit("_s", 1)[0] if n.rsplit("_s", 1)[-1].isdigit() else n
        bases.setdefault(base, []).append(r["dev_mismatches"])
    lines += ["", "| row | seeds | development mismatches | mean | stdev |", "|---|---|---|---|---|"]
    lines += [f"| `{b}` | {len(v)} | {v} | {statistics.mean(v):.1f} | {statistics.stdev(v) if len(v) > 1 else 0:.1f} |"
              for b, v in sorted(bases.items()) if len(v) > 1]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
