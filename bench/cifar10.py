"""CIFAR-10 benchmark: the label flips every recipe leaves on ResNet-20, measured on the exported IRs.

    python bench/cifar10.py --data ../shared/data/cifar10-jpeg.zip                  # every recipe
    python bench/cifar10.py --data ../shared/data/cifar10-jpeg.zip --only int8_qat  # one (or a few)
    python bench/cifar10.py --report-only                                           # table + plot from the cache

Every recipe compresses the same FP32 reference (``--reference``, trained with the config's
``training.reference`` schedule and cached there if the file is absent) with the same fine-tuning
budget and seed, through the built-in trainer: it fine-tunes, exports the IR pair and runs it on
OpenVINO CPU at f32 and at the CPU's default precision (bf16 on AVX512-BF16 machines). Rows:

* INT8: PTQ only, plain QAT (CE on labels), then the label-preserving ladder (distillation,
  + frozen BN, + label-preservation terms, + auto-selected hints, ``weights: "auto"``);
* 4-bit weights and activations, and 50% / 70% magnitude pruning: plain fine-tuning vs the best
  INT8 recipe (fewest f32 IR mismatches among the label-preserving rows), its non-compression
  entries added to the 4-bit or pruning entry.

Each row: both models' accuracies (PyTorch and IR), mismatches (labels that differ from the
reference's) and those where the reference was right, the reduction against the group's plain
baseline, seconds per fine-tuning epoch as a ratio to plain INT8 QAT, and the compressed IR's
throughput as a ratio to the FP32 IR's (CPU, measured after training, one model at a time).

Rows are cached in ``--output`` under their exact config: a rerun skips every row whose config is
unchanged, and a killed recipe resumes from its trainer checkpoint in ``--workdir``. The JSON, a
markdown table (``.md``) and a plot (``.png``) are rewritten after every row.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
import matplotlib.pyplot as plt

from nncf_lossless.checker.atomic import write_json, write_text
from nncf_lossless.checker.core import run_check
from nncf_lossless.checker.metrics import compare
from nncf_lossless.config import load_config
from nncf_lossless.errors import UserError
from nncf_lossless.training.loop import make_loaders, predict
from nncf_lossless.training.trainer import RESULTS, export_and_check, load_compressed, run

ROOT = common.ROOT
BASE_CONFIG = common.BASE_CONFIG

# overflow_fix: this suite runs on an AVX2 CPU without VNNI, where full-range INT8 weights saturate.
Q8 = {"algorithm": "quantization", "preset": "performance", "subset_size": 1000, "overflow_fix": "enable"}
Q4 = {**Q8, "weights": {"bits": 4}, "activations": {"bits": 4}}
BNA = {"enabled": True, "num_iterations": 50}
KD = {"algorithm": "label_preserving_distillation"}  # Apprentice: 0.5 label CE + 0.5 KD, T = 4
FROZEN_BN = {"algorithm": "frozen_bn", "at_fraction": 0.0}
LP_WEIGHTS = {"label_ce": 0.0, "kd": 1.0, "teacher_ce": 0.5, "margin": 0.5, "mse": 0.1}
LP = {**KD, "weights": LP_WEIGHTS}
HINTS = {"algorithm": "hint_distillation", "hint_points": "auto", "num_points": 3, "metric": "linear_cka", "weight": 0.1}
AUTO = {**KD, "weights": "auto", "auto": {"trials": 8, "epochs_per_trial": 1, "train_samples": 6400,
                                          "validation_fraction": 0.05}}


@dataclass(frozen=True)
class Recipe:
    """A benchmark row: ``entries`` compress; ``baseline`` is the row it is compared with."""

    group: str
    entries: tuple[dict[str, Any], ...]
    baseline: str
    train: bool = True
    best_of_int8: bool = False  # add the best INT8 recipe's distillation/BN/hint entries
    notes: list[str] = field(default_factory=list)


RECIPES: dict[str, Recipe] = {
    "int8_ptq": Recipe("INT8", (Q8,), "int8_qat", train=False),
    "int8_qat": Recipe("INT8", (Q8,), "int8_qat"),
    "int8_kd": Recipe("INT8", (Q8, KD), "int8_qat"),
    "int8_kd_fbn": Recipe("INT8", (Q8, KD, FROZEN_BN), "int8_qat"),
    "int8_lp": Recipe("INT8", (Q8, LP, FROZEN_BN), "int8_qat"),
    "int8_lp_hints": Recipe("INT8", (Q8, LP, FROZEN_BN, HINTS), "int8_qat"),
    "int8_auto": Recipe("INT8", (Q8, AUTO, FROZEN_BN, HINTS), "int8_qat"),
    "w4a4_qat": Recipe("4-bit W+A", (Q4,), "w4a4_qat"),
    "w4a4_best": Recipe("4-bit W+A", (Q4,), "w4a4_qat", best_of_int8=True),
    "prune50_ft": Recipe("pruning 50%", ({"algorithm": "pruning", "ratio": 0.5, "batch_norm_adaptation": BNA},), "prune50_ft"),
    "prune50_best": Recipe("pruning 50%", ({"algorithm": "pruning", "ratio": 0.5, "batch_norm_adaptation": BNA},),
                           "prune50_ft", best_of_int8=True),
    "prune70_ft": Recipe("pruning 70%", ({"algorithm": "pruning", "ratio": 0.7, "batch_norm_adaptation": BNA},), "prune70_ft"),
    "prune70_best": Recipe("pruning 70%", ({"algorithm": "pruning", "ratio": 0.7, "batch_norm_adaptation": BNA},),
                           "prune70_ft", best_of_int8=True),
}
LADDER = [name for name, r in RECIPES.items() if r.group == "INT8" and r.train and name != "int8_qat"]
COMPRESSION = ("quantization", "pruning")


def main() -> int:
    parser = common.parser(__doc__, "cifar10")
    parser.add_argument("--only", nargs="+", choices=list(RECIPES), help="run these recipes (default: all)")
    parser.add_argument("--rerun", action="store_true", help="run the selected recipes even if cached")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs of every trained recipe")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="more overrides of the base config, for every recipe")
    parser.add_argument("--throughput-samples", type=int, default=5000)
    return common.run_main(bench, parser.parse_args())


def bench(args: argparse.Namespace) -> int:
    report = json.loads(args.output.read_text()) if args.output.exists() else {"rows": {}}
    if not args.report_only:
        if args.data is None:
            raise UserError("--data: give the CIFAR-10 folder or zip (e.g. ../shared/data/cifar10-jpeg.zip)")
        if not args.data.exists():
            raise UserError(f"--data: {args.data} does not exist")
        ensure_reference(args)
        for name in args.only or list(RECIPES):
            config = recipe_config(name, args, report["rows"])
            cached = report["rows"].get(name)
            if cached and cached["config"] == config and not args.rerun:
                print(f"{name}: cached ({cached['ir']['f32']['mismatches']} IR f32 mismatches)", file=sys.stderr)
                continue
            report["rows"][name] = run_recipe(name, config, args)
            save(report, args.output)
        for name, row in report["rows"].items():
            if "throughput" not in row and Path(row["ir_paths"]["compressed"]).exists():
                row["throughput"] = throughput(row["ir_paths"], row["config"], args.throughput_samples)
                save(report, args.output)
    save(report, args.output)
    print(f"wrote {args.output}, {args.output.with_suffix('.md')} and {args.output.with_suffix('.png')}")
    return 0


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    overrides = [f"dataset.path={args.data}", f"model.checkpoint={args.reference}", "training.num_workers=0",
                 f"training.epochs={args.epochs}", *args.overrides]
    raw = json.loads(BASE_CONFIG.read_text())
    return load_config(raw, overrides)


def ensure_reference(args: argparse.Namespace) -> None:
    """Trains the FP32 reference with the config's reference schedule if ``--reference`` is absent."""
    if args.reference.exists():
        return
    config = base_config(args)
    config["model"]["checkpoint"] = None
    out = args.workdir / "reference"
    started = time.perf_counter()
    results = run({**config, "export": {**config["export"], "enabled": False}}, out, resume=(out / "config.json").exists())
    args.reference.parent.mkdir(parents=True, exist_ok=True)
    (out / "reference.pt").replace(args.reference)
    write_json({"weights": args.reference.name, "test_accuracy": results["reference"]["accuracy"],
                "training_seconds": time.perf_counter() - started, "training": config["training"]["reference"]},
               args.reference.with_suffix(".json"))


def recipe_config(name: str, args: argparse.Namespace, rows: dict[str, Any]) -> dict[str, Any]:
    recipe = RECIPES[name]
    entries = [copy.deepcopy(e) for e in recipe.entries]
    if recipe.best_of_int8:
        best = best_int8(rows)
        entries += [copy.deepcopy(e) for e in RECIPES[best].entries if e["algorithm"] not in COMPRESSION]
    config = base_config(args)
    config["compression"] = entries
    return load_config(config)


def best_int8(rows: dict[str, Any]) -> str:
    """The label-preserving INT8 recipe with the fewest f32 IR mismatches (accuracy breaks ties)."""
    done = [n for n in LADDER if n in rows]
    if not done:
        raise UserError(f"--only: the 4-bit and pruning 'best' rows need an INT8 ladder row first ({', '.join(LADDER)})")
    return min(done, key=lambda n: (rows[n]["ir"]["f32"]["mismatches"], -rows[n]["ir"]["f32"]["compressed_accuracy"]))


def run_recipe(name: str, config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out = args.workdir / name
    started = time.perf_counter()
    if RECIPES[name].train:
        same = (out / "config.json").exists() and load_config(out / "config.json") == config
        results = run(config, out, resume=same, overwrite=not same)
        epochs = len(results["history"])
        epoch_seconds = results["timing"]["fine_tuning_seconds_this_run"] / epochs
    else:
        results = post_training(config, out)
        epochs, epoch_seconds = 0, None
    row = summarize(name, config, results)
    row.update(epochs=epochs, epoch_seconds=epoch_seconds, wall_seconds=time.perf_counter() - started)
    if (out / "tuning.json").exists():
        row["tuning"] = json.loads((out / "tuning.json").read_text())["best"]
    print(f"{name}: {row['ir']['f32']['mismatches']} IR f32 mismatches, compressed accuracy "
          f"{row['ir']['f32']['compressed_accuracy']:.2%}, {row['wall_seconds']:.0f} s", file=sys.stderr)
    return row


def post_training(config: dict[str, Any], out: Path) -> dict[str, Any]:
    """PTQ (no fine-tuning): the trainer's evaluation, export and IR check on the calibrated model."""
    ctrl, cmodel, data = load_compressed(config)
    loaders = make_loaders(data, config["training"])
    ref_logits, labels = predict(ctrl.reference, loaders.test)
    comp_logits, _ = predict(cmodel, loaders.test)
    results = compare(ref_logits, comp_logits, labels)
    results["openvino"] = export_and_check(ctrl, data, loaders, out, (ref_logits, comp_logits), labels)
    write_json(results, out / RESULTS)
    return results


def summarize(name: str, config: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    ir = {}
    for r in results["openvino"]["runs"]:
        ir[r["requested_precision"]] = {
            "precision": r["precision"],
            "reference_accuracy": r["reference"]["accuracy"],
            "compressed_accuracy": r["compressed"]["accuracy"],
            "mismatches": r["mismatches"],
            "mismatches_reference_correct": r["mismatches_reference_correct"],
            "torch_vs_ir_top1_disagreements": r["source_vs_ir"]["compressed"]["top1_disagreements"],
        }
    return {
        "group": RECIPES[name].group,
        "baseline": RECIPES[name].baseline,
        "config": config,
        "num_samples": results["num_samples"],
        "pytorch": {"reference_accuracy": results["reference"]["accuracy"],
                    "compressed_accuracy": results["compressed"]["accuracy"],
                    "mismatches": results["mismatches"],
                    "mismatches_reference_correct": results["mismatches_reference_correct"]},
        "ir": ir,
        "ir_paths": {k: results["openvino"][f"{k}_ir"] for k in ("reference", "compressed")},
    }


def throughput(paths: dict[str, str], config: dict[str, Any], samples: int) -> dict[str, Any]:
    """Images/s of the FP32 and the compressed IR on CPU (THROUGHPUT hint, async), per precision."""
    import numpy as np

    loaders = make_loaders(_test_only(config), config["training"])
    inputs = np.concatenate([x.numpy() for x, _ in loaders.test])[:samples]
    labels = np.concatenate([y.numpy() for _, y in loaders.test])[:samples]
    report = run_check(paths["reference"], [paths["reference"], paths["compressed"]], inputs, labels,
                       devices=["CPU"], precisions=["f32", "default"])
    out: dict[str, Any] = {"samples": len(inputs)}
    for r in report["runs"]:
        side = "fp32_ir" if r["model"] == paths["reference"] else "compressed_ir"
        out.setdefault(r["requested_precision"], {})[f"{side}_images_per_second"] = r["images_per_second"]
    for precision in ("f32", "default"):
        p = out[precision]
        p["ratio"] = p["compressed_ir_images_per_second"] / p["fp32_ir_images_per_second"]
    return out


_DATA_CACHE: dict[str, Any] = {}


def _test_only(config: dict[str, Any]) -> Any:
    from nncf_lossless.data import load_dataset

    key = json.dumps(config["dataset"], sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(config["dataset"])
    return _DATA_CACHE[key]


# ---- report --------------------------------------------------------------------------------------


def save(report: dict[str, Any], path: Path) -> None:
    rows = report["rows"]
    qat = rows.get("int8_qat")
    for row in rows.values():
        base = rows.get(row["baseline"])
        mine, theirs = row["ir"]["f32"]["mismatches"], base["ir"]["f32"]["mismatches"] if base else None
        row["reduction_vs_baseline"] = None if theirs is None else (theirs / mine if mine else float("inf"))
        row["epoch_time_ratio"] = (row["epoch_seconds"] / qat["epoch_seconds"]
                                   if qat and row.get("epoch_seconds") else None)
    ordered = {name: rows[name] for name in RECIPES if name in rows}
    report = {**report, "rows": ordered}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, path)
    write_text(markdown_table(ordered), path.with_suffix(".md"))
    plot(ordered, path.with_suffix(".png"))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _ratio(x: float | None) -> str:
    if x is None:
        return "–"
    return "∞" if x == float("inf") else f"{x:.2f}x"


def markdown_table(rows: dict[str, Any]) -> str:
    head = ("| recipe | FP32 acc % | compressed acc % (IR f32) | Δ acc | mismatches IR f32 | IR default | PyTorch "
            "| reference right (IR f32) | vs plain | epoch time vs plain QAT | IR throughput vs FP32 (f32 / default) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows.items():
        f32, default = r["ir"]["f32"], r["ir"]["default"]
        tp = r.get("throughput")
        lines.append(" | ".join([
            f"| `{name}`", _pct(f32["reference_accuracy"]), _pct(f32["compressed_accuracy"]),
            f"{100 * (f32['compressed_accuracy'] - f32['reference_accuracy']):+.2f}",
            f"**{f32['mismatches']}**", f"{default['mismatches']} ({default['precision']})", str(r["pytorch"]["mismatches"]),
            str(f32["mismatches_reference_correct"]), _ratio(r.get("reduction_vs_baseline")),
            _ratio(r.get("epoch_time_ratio")),
            f"{tp['f32']['ratio']:.2f} / {tp['default']['ratio']:.2f}" if tp else "–",
        ]) + " |")
    lines += ["", "| recipe | epochs | seconds per fine-tuning epoch | wall seconds (compress, tune, train, export, check) |",
              "|---|---|---|---|"]
    for name, r in rows.items():
        epoch = "–" if r.get("epoch_seconds") is None else f"{r['epoch_seconds']:.0f}"
        lines.append(f"| `{name}` | {r['epochs']} | {epoch} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, Any], path: Path) -> None:
    groups = list(dict.fromkeys(r["group"] for r in rows.values()))
    cmap = {g: plt.get_cmap("tab10")(i) for i, g in enumerate(groups)}
    common.flips_plot(rows, path, "CIFAR-10 ResNet-20: label flips vs the FP32 reference, per recipe",
                      colors=[cmap[r["group"]] for r in rows.values()])


if __name__ == "__main__":
    sys.exit(main())
