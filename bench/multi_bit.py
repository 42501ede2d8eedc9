"""Multi-bit benchmark: one multi_bit ResNet-20 (8/6/4 bits) vs one separately trained QAT model per bit-width.

    python bench/multi_bit.py --data ../shared/data/cifar10-jpeg.zip                    # every row
    python bench/multi_bit.py --data ... --epochs 1 --max-train-samples 5000           # a small budget
    python bench/multi_bit.py --report-only                                            # table + plot

Every row starts from the same cached FP32 reference (``--reference``) with the same seed and
fine-tuning schedule, through the built-in trainer, and is measured on its exported IRs (OpenVINO
CPU, f32 and the CPU's default precision) against the reference IR. Rows:

* ``multi_bit``: ``configs/cifar10_resnet20_multi_bit.json``'s entries, one run, one IR per bit-width;
* ``qat_w{b}``: ``quantization`` at ``b``-bit weights and activations with the same
  ``label_preserving_distillation`` entry, one run per bit-width.

Same total number of training steps: every run has the same epochs (and so the same optimizer
steps); the multi-bit run does one forward/backward per bit-width per step, so the separate runs
together do as many forward/backward passes at a bit-width as it does. Time: the multi-bit run's
fine-tuning seconds against the sum of the separate runs'.

Rows are cached in ``--output`` under their exact config; a killed row resumes from its trainer
checkpoint in ``--workdir``. The JSON, a markdown table (``.md``) and a plot (``.png``) are rewritten
after every row, with the CPU's ISA flags next to the figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import common
import matplotlib.pyplot as plt
from cpu_flags import cpu_flags

from nncf_lossless.checker.atomic import write_json, write_text
from nncf_lossless.config import load_config
from nncf_lossless.errors import UserError
from nncf_lossless.training.trainer import run

ROOT = common.ROOT
BASE_CONFIG = ROOT / "configs" / "cifar10_resnet20_multi_bit.json"


def main() -> int:
    parser = common.parser(__doc__, "multi_bit")
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4])
    parser.add_argument("--only", nargs="+", help="run these rows (multi_bit, qat_w8, ...; default: all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-test-samples", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="more overrides of the base config, for every row")
    return common.run_main(bench, parser.parse_args())


def bench(args: argparse.Namespace) -> int:
    report = json.loads(args.output.read_text()) if args.output.exists() else {"rows": {}}
    report["cpu_flags"] = cpu_flags()
    if not args.report_only:
        common.require_data(args)
        if not args.reference.exists():
            raise UserError(f"--reference: {args.reference} does not exist (bench/cifar10.py trains and caches it)")
        configs = row_configs(args)
        for name in args.only or list(configs):
            if name not in configs:
                raise UserError(f"--only: unknown row {name!r}; rows: {', '.join(configs)}")
            config = configs[name]
            cached = report["rows"].get(name)
            if cached and cached["config"] == config:
                print(f"{name}: cached", file=sys.stderr)
                continue
            report["rows"][name] = run_row(name, config, args.workdir / name)
            save(report, args.output)
    save(report, args.output)
    print(f"wrote {args.output}, {args.output.with_suffix('.md')} and {args.output.with_suffix('.png')}")
    return 0


def row_configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    overrides = [f"dataset.path={args.data}", f"model.checkpoint={args.reference}", "training.num_workers=0",
                 f"training.epochs={args.epochs}", *args.overrides]
    if args.max_train_samples:
        overrides.append(f"dataset.max_train_samples={args.max_train_samples}")
    if args.max_test_samples:
        overrides.append(f"dataset.max_test_samples={args.max_test_samples}")
    base = load_config(json.loads(BASE_CONFIG.read_text()), overrides)
    multi = next(e for e in base["compression"] if e["algorithm"] == "multi_bit")
    others = [e for e in base["compression"] if e["algorithm"] != "multi_bit"]
    configs = {"multi_bit": load_config({**base, "compression": [{**multi, "bits": sorted(args.bits, reverse=True)}, *others]})}
    quantization = {k: multi[k] for k in ("preset", "subset_size", "overflow_fix", "target_device") if k in multi}
    for bits in sorted(args.bits, reverse=True):
        entry = {"algorithm": "quantization", **quantization, "weights": {"bits": bits}, "activations": {"bits": bits}}
        configs[f"qat_w{bits}"] = load_config({**copy.deepcopy(base), "compression": [entry, *copy.deepcopy(others)]})
    return configs


def run_row(name: str, config: dict[str, Any], out: Path) -> dict[str, Any]:
    same = (out / "config.json").exists() and load_config(out / "config.json") == config
    results = run(config, out, resume=same, overwrite=not same)
    per_bits = {}
    if "by_bits" in results:
        for bits, ir in results["openvino"]["by_bits"].items():
            per_bits[bits] = _ir_summary(ir["runs"], results["by_bits"][bits]["mismatches"])
    else:
        bits = str(config["compression"][0]["weights"]["bits"])
        per_bits[bits] = _ir_summary(results["openvino"]["runs"], results["mismatches"])
    row = {"config": config, "num_samples": results["num_samples"], "reference_accuracy": results["reference"]["accuracy"],
           "epochs": len(results["history"]), "steps": results["statistics"]["step"],
           "fine_tuning_seconds": results["timing"]["fine_tuning_seconds_this_run"], "by_bits": per_bits}
    print(f"{name}: " + ", ".join(f"w{b}: {r['ir_f32_mismatches']} IR f32 mismatches" for b, r in per_bits.items()),
          file=sys.stderr)
    return row


def _ir_summary(runs: list[dict[str, Any]], torch_mismatches: int) -> dict[str, Any]:
    by = {r["requested_precision"]: r for r in runs}
    return {"pytorch_mismatches": torch_mismatches,
            "ir_f32_mismatches": by["f32"]["mismatches"], "ir_f32_accuracy": by["f32"]["compressed"]["accuracy"],
            "ir_default_precision": by["default"]["precision"], "ir_default_mismatches": by["default"]["mismatches"]}


def save(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, path)
    write_text(markdown_table(report), path.with_suffix(".md"))
    plot(report, path.with_suffix(".png"))


def markdown_table(report: dict[str, Any]) -> str:
    rows = report["rows"]
    lines = [f"CPU flags: {', '.join(report.get('cpu_flags', [])) or 'unknown'}", "",
             ("| bits | multi_bit IR f32 mismatches | separate QAT IR f32 mismatches | multi_bit IR default | "
             "separate IR default | multi_bit accuracy (IR f32) | separate accuracy (IR f32) |"),
             "|---|---|---|---|---|---|---|"]
    multi = rows.get("multi_bit", {}).get("by_bits", {})
    bits = sorted({int(b) for b in multi} | {int(n.removeprefix("qat_w")) for n in rows if n.startswith("qat_w")}, reverse=True)
    for b in bits:
        m, s = multi.get(str(b)), rows.get(f"qat_w{b}", {}).get("by_bits", {}).get(str(b))

        def cell(r, key, pct=False):
            return "—" if r is None else (f"{r[key]:.2%}" if pct else str(r[key]))

        lines.append(f"| {b} | {cell(m, 'ir_f32_mismatches')} | {cell(s, 'ir_f32_mismatches')} | "
                     f"{cell(m, 'ir_default_mismatches')} | {cell(s, 'ir_default_mismatches')} | "
                     f"{cell(m, 'ir_f32_accuracy', True)} | {cell(s, 'ir_f32_accuracy', True)} |")
    separate = [r for n, r in rows.items() if n.startswith("qat_w")]
    if "multi_bit" in rows and separate:
        timing = (f"fine-tuning time: multi_bit {rows['multi_bit']['fine_tuning_seconds']:.0f} s vs the separate runs "
                  f"together {sum(r['fine_tuning_seconds'] for r in separate):.0f} s "
                  f"({rows['multi_bit']['steps']} optimizer steps each run, {rows['multi_bit']['num_samples']} test samples)")
        lines += ["", timing]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    rows = report["rows"]
    multi = rows.get("multi_bit", {}).get("by_bits", {})
    bits = sorted({int(b) for b in multi} | {int(n.removeprefix("qat_w")) for n in rows if n.startswith("qat_w")}, reverse=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = range(len(bits))
    m = [multi.get(str(b), {}).get("ir_f32_mismatches", 0) for b in bits]
    s = [rows.get(f"qat_w{b}", {}).get("by_bits", {}).get(str(b), {}).get("ir_f32_mismatches", 0) for b in bits]
    ax.bar([i - 0.2 for i in x], m, 0.4, label="multi_bit (one run)")
    ax.bar([i + 0.2 for i in x], s, 0.4, label="separate QAT per bit-width")
    ax.set_xticks(list(x), [f"W{b}A{b}" for b in bits])
    ax.set_ylabel("IR f32 mismatches vs FP32 IR")
    model = next((r["config"]["model"]["name"] for r in rows.values()), "?")
    ax.set_title(f"CIFAR-10 {model} ({', '.join(report.get('cpu_flags', []))})", fontsize=8)
    ax.legend()
    fig.tight_layout()
    common.save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
