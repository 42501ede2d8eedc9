"""Flip repair on CIFAR-10 ResNet-20: INT8 and 4-bit PTQ IRs repaired to validation budgets of 0 and 0.1%.

    nice -n 19 python bench/repair.py --data /work/shared/data/cifar10-jpeg.zip   # resumable, row by row
    python bench/repair.py --report-only                                         # table + plot from the JSON

The FP32 reference is the cached ``bench/cache/cifar10_resnet20_fp32.pt`` (87.55% test accuracy).
Each bit width is post-training quantized with NNCF (the same entries as ``bench/cifar10.py``),
exported as the IR pair, and repaired with ``nncf_lossless.repair`` on OpenVINO CPU in f32
against a fixed validation split of the TRAINING images (``--val-samples``, seed 0); the 10,000
test images are only measured. Per row: validation and test mismatches before and after, the
layers put back in float, and throughput (images/s from the checker's runner on the test set)
as ratios to the unrepaired IR and to the FP32 IR. Rows are cached in ``--output`` under their
settings; a rerun skips every finished row, the IR pairs and arrays are cached in ``--workdir``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import common
import matplotlib.pyplot as plt
import numpy as np
from cpu_flags import cpu_flags

from nncf_lossless.checker.atomic import write_json, write_text

ROOT = common.ROOT
BASE_CONFIG = common.BASE_CONFIG
# The entries of bench/cifar10.py's PTQ rows (overflow_fix: that suite also ran on CPUs without VNNI).
Q8 = {"algorithm": "quantization", "preset": "performance", "subset_size": 1000, "overflow_fix": "enable"}
Q4 = {**Q8, "weights": {"bits": 4}, "activations": {"bits": 4}}
MODELS = {"int8_ptq": Q8, "4bit_ptq": Q4}


def main() -> int:
    parser = common.parser(__doc__, "repair", data=ROOT.parent / "shared" / "data" / "cifar10-jpeg.zip")
    parser.add_argument("--val-samples", type=int, default=5000)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.0, 0.001],
                        help="validation budgets as fractions of the validation set (default 0 and 0.1%%)")
    parser.add_argument("--precisions", nargs="+", default=["f32"], choices=["f32", "default"])
    parser.add_argument("--only", nargs="+", choices=list(MODELS), help="only these IRs")
    parser.add_argument("--remeasure", action="store_true",
                        help="measure the throughput of every finished row's IRs again, all in one interleaved pass")
    parser.add_argument("--throughput-samples", type=int, default=2000)
    parser.add_argument("--merge", type=Path, nargs="+", default=[],
                        help="add the rows of these result files (parallel runs with other --output) before saving")
    args = parser.parse_args()

    report = json.loads(args.output.read_text()) if args.output.exists() else {"rows": {}}
    # Rows keep the flags of the machine that measured them: merged files and older rows may come from another CPU.
    _stamp_flags(report)
    report.update(cpu_flags=cpu_flags(), host=platform.node())
    for other in args.merge:
        report["rows"].update(_stamp_flags(json.loads(other.read_text()))["rows"])
    if args.remeasure:
        remeasure(report, args)
    if args.report_only or args.remeasure:
        save(report, args.output)
        return 0
    from nncf_lossless.repair.run import repair

    for model in args.only or list(MODELS):
        for precision in args.precisions:
            memo: dict[Any, Any] = {}  # the larger budget first: the smaller one continues its search
            for fraction in sorted(args.budgets, reverse=True):
                budget = round(fraction * args.val_samples)
                name = f"{model}_{precision}_budget{budget}"
                settings = {"model": model, "entry": MODELS[model], "precision": precision, "budget": budget,
                            "budget_fraction": fraction, "val_samples": args.val_samples}
                if report["rows"].get(name, {}).get("settings") == settings:
                    print(f"{name}: cached", file=sys.stderr)
                    continue
                pair = ensure_pair(model, args)
                started = time.perf_counter()
                out = args.workdir / name
                result = repair(pair["reference"], pair["compressed"], load_npz(pair["val"]), out, max_mismatches=budget,
                                test=load_npz(pair["test"]), precision=None if precision == "default" else precision,
                                progress=log_progress, memo=memo,
                                sources={"validation": str(pair["val"]), "test": str(pair["test"])})
                report["rows"][name] = summarize(result, settings, time.perf_counter() - started) | {"cpu_flags": cpu_flags()}
                save(report, args.output)
                row = report["rows"][name]
                print(f"{name}: test mismatches {row['test']['before']} -> {row['test']['after']}, "
                      f"{row['layers_reverted']} layers in float, throughput x{row['throughput_vs_unrepaired']:.2f} "
                      f"of the unrepaired IR", file=sys.stderr)
    save(report, args.output)
    return 0


def _stamp_flags(report: dict[str, Any]) -> dict[str, Any]:
    for row in report["rows"].values():
        row.setdefault("cpu_flags", report.get("cpu_flags", []))
    return report


def remeasure(report: dict[str, Any], args: argparse.Namespace) -> None:
    """Every IR of the finished rows (FP32, each unrepaired and repaired IR) in one ``measure_throughput``:
    best of 5 passes on the same test images, the IRs taking turns, so the ratios share the machine's load."""
    from nncf_lossless.repair.run import measure_throughput

    models, where = {}, {}
    for name, row in report["rows"].items():
        model = row["settings"]["model"]
        models["fp32_reference"] = args.workdir / model / "reference.xml"
        models[model] = args.workdir / model / "compressed.xml"
        if row["budget_met"]:
            models[name] = args.workdir / name / "repaired.xml"
        where[name] = model
    inputs = load_npz(args.workdir / "test.npz")[0][: args.throughput_samples]
    precisions = {row["settings"]["precision"] for row in report["rows"].values()}
    for precision in precisions:
        measured = measure_throughput(models, inputs, "CPU", None if precision == "default" else precision, repeats=5)
        speed = measured["images_per_second"]
        for name, row in report["rows"].items():
            if row["settings"]["precision"] != precision:
                continue
            mine = {"fp32_reference": speed["fp32_reference"], "compressed": speed[where[name]], "repaired": speed.get(name)}
            row["images_per_second"] = mine
            row["throughput_vs_unrepaired"] = mine["repaired"] / mine["compressed"] if mine["repaired"] else None
            row["throughput_vs_fp32"] = mine["repaired"] / mine["fp32_reference"] if mine["repaired"] else None
            row["unrepaired_vs_fp32"] = mine["compressed"] / mine["fp32_reference"]
            row["throughput_measurement"] = {k: measured[k] for k in ("num_samples", "repeats", "device")} | {"interleaved": True}
            print(f"{name}: repaired {_r(row['throughput_vs_unrepaired'])} of unrepaired, {_r(row['throughput_vs_fp32'])} "
                  f"of FP32", file=sys.stderr)
    step_throughput(report, args, inputs[: args.throughput_samples // 2])


def step_throughput(report: dict[str, Any], args: argparse.Namespace, inputs: np.ndarray) -> None:
    """Images/s of every greedy step's IR (f32 rows), rebuilt with the repair's surgery: best of 2, interleaved.

    The budget-0 row's greedy steps extend the larger budgets' (the same ranking), so one chain per IR."""
    import openvino as ov

    from nncf_lossless.repair.run import measure_throughput
    from nncf_lossless.repair.surgery import quantizer_groups, reference_weights, revert

    core = ov.Core()
    for model in MODELS:
        rows = {n: r for n, r in report["rows"].items() if r["settings"]["model"] == model and r["settings"]["precision"] == "f32"}
        if not rows:
            continue
        longest = max(rows.values(), key=lambda r: len([s for s in r["steps"] if not s["pruned"]]))
        chain = [s["reverted_groups"] for s in longest["steps"] if not s["pruned"]]
        comp = core.read_model(args.workdir / model / "compressed.xml")
        weights = reference_weights(comp, core.read_model(args.workdir / model / "reference.xml"))
        groups = quantizer_groups(comp)
        steps = {str(len(c)): revert(comp, [groups[i] for i in c], weights) for c in chain}
        speed = measure_throughput(steps, inputs, "CPU", "f32", repeats=2, core=core)["images_per_second"]
        for row in rows.values():
            for step in row["steps"]:
                step["images_per_second_remeasured"] = speed.get(str(len(step["reverted_groups"]))) if not step["pruned"] else None
        print(f"{model}: step throughput {', '.join(f'{k}: {v:.0f}' for k, v in speed.items())}", file=sys.stderr)


def log_progress(title: str, total: int) -> Any:
    """A progress callback for a log file: one line per finished search phase or measurement."""
    done = [0]
    started = time.perf_counter()

    def advance(n: int) -> None:
        done[0] += n
        if done[0] >= total:
            print(f"  {title}: {total} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    return advance


def ensure_pair(model: str, args: argparse.Namespace) -> dict[str, Path]:
    """The IR pair of one PTQ model and the validation/test arrays, built once into ``--workdir``."""
    import torch

    from nncf_lossless.config import load_config
    from nncf_lossless.training.trainer import load_compressed

    out = args.workdir / model
    paths = {"reference": out / "reference.xml", "compressed": out / "compressed.xml",
             "val": args.workdir / f"val{args.val_samples}.npz", "test": args.workdir / "test.npz"}
    if all(p.exists() for p in paths.values()):
        return paths
    raw = json.loads(BASE_CONFIG.read_text())
    config = load_config(raw, [f"dataset.path={args.data}", f"model.checkpoint={args.reference}", "training.num_workers=0"])
    config["compression"] = [copy.deepcopy(MODELS[model])]
    ctrl, _, data = load_compressed(load_config(config))
    if not (paths["reference"].exists() and paths["compressed"].exists()):
        ctrl.export(out, metadata={"class_names": data.class_names, "mean": data.mean, "std": data.std})
    if not paths["val"].exists():
        # A fixed split of the training images: never the test set, and the same for every row.
        index = torch.randperm(len(data.calibration), generator=torch.Generator().manual_seed(0))[: args.val_samples]
        save_npz(paths["val"], *stack(data.calibration, index.tolist()))
    if not paths["test"].exists():
        save_npz(paths["test"], *stack(data.test, range(len(data.test))))
    return paths


def stack(dataset: Any, indices: Any) -> tuple[np.ndarray, np.ndarray]:
    items = [dataset[i] for i in indices]
    return np.stack([x.numpy() for x, _ in items]).astype(np.float32), np.array([y for _, y in items], dtype=np.int64)


def save_npz(path: Path, inputs: np.ndarray, labels: np.ndarray) -> None:
    from nncf_lossless.checker.atomic import atomic_write

    atomic_write(path, lambda f: np.savez(f, inputs=inputs, labels=labels))


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from nncf_lossless.checker.core import load_samples

    return load_samples(path)


def summarize(result: dict[str, Any], settings: dict[str, Any], seconds: float) -> dict[str, Any]:
    def split(name: str) -> dict[str, Any]:
        m = result[name]
        return {"samples": m["num_samples"], "before": m["compressed"]["mismatches"],
                "after": m["repaired"]["mismatches"] if "repaired" in m else None,
                "compressed_accuracy_before": m["compressed"]["accuracy"],
                "compressed_accuracy_after": m["repaired"]["accuracy"] if "repaired" in m else None,
                "reference_accuracy": m["reference_accuracy"],
                # The same IRs counted with the THROUGHPUT hint's streams (the checker's second pass).
                "throughput_streams_before": m["compressed"]["throughput_mismatches"],
                "throughput_streams_after": m["repaired"]["throughput_mismatches"] if "repaired" in m else None}

    tp = result["throughput"]
    return {
        "settings": settings,
        "budget_met": result["budget_met"],
        "validation": split("validation"),
        "test": split("test"),
        "num_groups": result["num_groups"],
        "layers_reverted": len(result["reverted_layers"]),
        "reverted_layers": result["reverted_layer_labels"],
        "images_per_second": tp["images_per_second"],
        "throughput_vs_unrepaired": tp["repaired_vs_compressed"],
        "throughput_vs_fp32": tp["repaired_vs_fp32"],
        "unrepaired_vs_fp32": tp["compressed_vs_fp32"],
        "steps": [{k: s[k] for k in ("reverted_groups", "validation_mismatches", "images_per_second")} | {"pruned": "pruned" in s}
                  for s in result["steps"]],
        "precision": result["test"]["compressed"]["precision"],
        "seconds": seconds,
    }


def _r(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}x"


def _streams(split: dict[str, Any]) -> str:
    """Rows measured before the checker's THROUGHPUT pass existed have no such counts."""
    if "throughput_streams_before" not in split:
        return "not measured"
    return f"{split['throughput_streams_before']} → {split['throughput_streams_after']}"


def markdown_table(report: dict[str, Any]) -> str:
    head = ("| IR | precision | budget (of val) | val mismatches before → after | test mismatches before → after "
            "| test, THROUGHPUT streams | groups in float (of) | layers in float | throughput vs unrepaired "
            "| vs FP32 IR (unrepaired → repaired) |")
    cpu, legend = common.cpu_letters(report["rows"])
    head = head.replace("| IR |", "| IR | CPU |")
    lines = [*legend, "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in report["rows"].values():
        s = r["settings"]
        lines.append(f"| `{s['model']}` | {cpu(r)} | {r['precision']} | {s['budget']} ({100 * s['budget_fraction']:.1f}%) "
                     f"| {r['validation']['before']} → {r['validation']['after']} | **{r['test']['before']} → {r['test']['after']}** "
                     f"| {_streams(r['test'])} | {len(r['steps'][-1]['reverted_groups'])} ({r['num_groups']}) | {r['layers_reverted']} "
                     f"| {_r(r['throughput_vs_unrepaired'])} "
                     f"| {_r(r['unrepaired_vs_fp32'])} → {_r(r['throughput_vs_fp32'])} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """One greedy chain per IR (the budgets share it: the smaller one continues the larger one's search),
    each budget's stopping point marked on it."""
    rows = report["rows"]
    if not rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for model in dict.fromkeys(r["settings"]["model"] for r in rows.values()):
        mine = {n: r for n, r in rows.items() if r["settings"]["model"] == model}
        longest = max(mine.values(), key=lambda r: len([s for s in r["steps"] if not s["pruned"]]))
        steps = [s for s in longest["steps"] if not s["pruned"]]
        flips = [s["validation_mismatches"] for s in steps]
        speeds = [s.get("images_per_second_remeasured") or s["images_per_second"] for s in steps]
        (line,) = axes[0].plot(range(len(steps)), flips, "o-", ms=3, label=model)
        axes[1].plot(speeds, flips, "o-", ms=3, color=line.get_color(), label=model)
        for r in mine.values():
            end = r["validation"]["after"]
            if end is not None:
                axes[0].plot(len(r["steps"][-1]["reverted_groups"]), end, "*", ms=12, color=line.get_color())
    axes[0].set(xlabel="quantizer groups in float (greedy rank order; stars: where each budget stopped)",
                ylabel=f"validation mismatches (of {r['validation']['samples']})", yscale="symlog",
                title="flips along the revert order")
    axes[1].set(xlabel="images/s of each step's IR (f32, THROUGHPUT hint)", ylabel="validation mismatches",
                yscale="symlog", title="flips vs throughput")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(f"CIFAR-10 ResNet-20 flip repair, OpenVINO CPU ({', '.join(report.get('cpu_flags', []))})", fontsize=10)
    fig.tight_layout()
    common.save_figure(fig, path)


def save(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, path)
    write_text(markdown_table(report), path.with_suffix(".md"))
    plot(report, path.with_suffix(".png"))


if __name__ == "__main__":
    sys.exit(main())
