"""Label-preserving distillation vs plain QAT on digits: mismatches and training-time overhead.

    python bench/distillation.py [--output bench/results/distillation.json] [--seeds 0 1 2]

(a) Mismatches: one FP32 reference (trained briefly, ``--reference-epochs``), quantized to
``--bits`` weights and activations, fine-tuned ``--epochs`` epochs by plain QAT (CE) and by
distillation (``label_preserving_distillation``, scheme C, weights below), with the same
calibration, data order, optimizer, budget and seed; repeated for each seed.
(b) Overhead: seconds per training step of plain QAT, distillation, and distillation with
``teacher_cache`` (timed on a second epoch, once the cache is warm), same model, batch and steps.

Writes JSON and a PNG (mismatches per seed; seconds per step) next to it. Uses the controller
API and the trainer's own ``fit_epoch``, so it times exactly what ``nncf-lossless train`` runs.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from rich.console import Console
from torch.utils.data import DataLoader

from nncf_lossless import create_compressed_model
from nncf_lossless.checker.metrics import compare
from nncf_lossless.checkpoint import write_json
from nncf_lossless.data import load_dataset
from nncf_lossless.models import build_model
from nncf_lossless.training.loop import fit_epoch, make_lr_schedule, make_optimizer, predict, seed_everything

# Label preservation first: the ground truth gets a small weight, since where the reference is wrong it
# pulls the student away from the reference's answer.
DISTILL = {"algorithm": "label_preserving_distillation", "scheme": "C", "temperature": 4.0,
           "weights": {"label_ce": 0.1, "kd": 1.0, "mse": 0.5}}
TRAIN = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "lr_schedule": "cosine"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench/results/distillation.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs of every method")
    parser.add_argument("--reference-epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=TRAIN["lr"], help="fine-tuning learning rate (Adam, cosine)")
    parser.add_argument("--timing-epochs", type=int, default=3, help="timed epochs per method (after one warm-up)")
    args = parser.parse_args()
    console = Console(stderr=True, quiet=True)
    TRAIN["lr"] = args.lr

    data = load_dataset({"name": "digits"})
    seed_everything(0)
    reference = build_model({"name": "digits_cnn"}, num_classes=10, in_channels=1)
    train = DataLoader(data.train, batch_size=64, shuffle=True)
    ref_cfg = {"optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0, "lr_schedule": "cosine"}
    opt = make_optimizer(reference.parameters(), ref_cfg)
    sched = make_lr_schedule(opt, ref_cfg, args.reference_epochs * len(train))
    for _ in range(args.reference_epochs):
        fit_epoch(reference, train, opt, sched, None, console, "reference")
    reference.eval()
    test = DataLoader(data.test, batch_size=256)
    calibration = DataLoader(data.calibration, batch_size=64)
    ref_logits, labels = predict(reference, test)
    bits = {"weights": {"bits": args.bits}, "activations": {"bits": args.bits}}
    methods = {
        "plain_qat": [{"algorithm": "quantization", **bits}],
        "distillation": [{"algorithm": "quantization", **bits}, DISTILL],
        "distillation_cached": [{"algorithm": "quantization", **bits}, {**DISTILL, "teacher_cache": True}],
    }

    def compressed(method: str, seed: int):
        seed_everything(seed)
        config = {"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": methods[method]}
        ctrl, model = create_compressed_model(copy.deepcopy(reference), config, calibration_data=calibration)
        seed_everything(seed)  # same data order for every method
        loader = DataLoader(data.train, batch_size=64, shuffle=True)
        opt = make_optimizer(ctrl.trainable_parameters(), TRAIN)
        return ctrl, model, loader, opt

    accuracy_rows = []
    for seed in args.seeds:
        row = {"seed": seed}
        for method in ("plain_qat", "distillation"):
            ctrl, model, loader, opt = compressed(method, seed)
            before = compare(ref_logits, predict(model, test)[0], labels)["mismatches"]
            sched = make_lr_schedule(opt, TRAIN, args.epochs * len(loader))
            for epoch in range(args.epochs):
                fit_epoch(model, loader, opt, sched, ctrl, console, method)
            m = compare(ref_logits, predict(model, test)[0], labels)
            row[method] = {"mismatches_after_calibration": before, "mismatches": m["mismatches"],
                           "mismatches_reference_correct": m["mismatches_reference_correct"],
                           "compressed_accuracy": m["compressed"]["accuracy"]}
        print(f"seed {seed}: plain QAT {row['plain_qat']['mismatches']} mismatches, "
              f"distillation {row['distillation']['mismatches']}", file=sys.stderr)
        accuracy_rows.append(row)

    # Interleaved, one epoch of each method per round, minimum over rounds: other load on the machine
    # hits every method alike and the minimum is the least disturbed epoch.
    runs = {}
    for method in methods:
        ctrl, model, loader, opt = compressed(method, args.seeds[0])
        sched = make_lr_schedule(opt, TRAIN, (args.timing_epochs + 1) * len(loader))
        fit_epoch(model, loader, opt, sched, ctrl, console, "warm-up")  # also fills the teacher cache
        runs[method] = (ctrl, model, loader, opt, sched, [])
    for _ in range(args.timing_epochs):
        for method, (ctrl, model, loader, opt, sched, times) in runs.items():
            started = time.perf_counter()
            fit_epoch(model, loader, opt, sched, ctrl, console, method)
            times.append((time.perf_counter() - started) / len(loader))
    timing = {}
    for method, (ctrl, *_, times) in runs.items():
        timing[method] = {"seconds_per_step": min(times), "seconds_per_step_each_epoch": times}
        stats = ctrl.statistics().get("label_preserving_distillation", {}).get("teacher_cache")
        if stats:
            timing[method]["teacher_cache"] = stats
    for method in ("distillation", "distillation_cached"):
        timing[method]["overhead_vs_plain_qat"] = timing[method]["seconds_per_step"] / timing["plain_qat"]["seconds_per_step"] - 1

    total = {m: sum(r[m]["mismatches"] for r in accuracy_rows) for m in ("plain_qat", "distillation")}
    results = {
        "setting": {"dataset": "digits (sklearn)", "test_samples": len(labels), "bits": args.bits,
                    "reference_epochs": args.reference_epochs, "reference_accuracy": float((ref_logits.argmax(1) == labels).mean()),
                    "fine_tuning_epochs": args.epochs, "steps_per_epoch": len(train), "batch_size": 64,
                    "optimizer": TRAIN, "distillation": DISTILL, "seeds": args.seeds,
                    "note": "short fine-tuning budget so that plain QAT leaves flips; same reference, calibration, "
                            "data order, optimizer and seed for both methods. A first attempt with weights "
                            "{label_ce 0.1, kd 1, teacher_ce 0.5, margin 0.5}, T=2 is kept in distillation_attempt1.json "
                            "(plain 21 vs distillation 26 mismatches over seeds 0-2; its timing was not interleaved)"},
        "mismatches": accuracy_rows,
        "mismatches_total": total,
        "timing": {**timing, "timed_epochs": args.timing_epochs, "statistic": "minimum over interleaved epochs", "device": "cpu",
                   "threads": torch.get_num_threads()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json(results, args.output)
    _plot(results, args.output.with_suffix(".png"))
    print(f"totals over seeds {args.seeds}: {total}; overhead: "
          f"{timing['distillation']['overhead_vs_plain_qat']:+.1%} (no cache), "
          f"{timing['distillation_cached']['overhead_vs_plain_qat']:+.1%} (teacher_cache)", file=sys.stderr)
    return 0


def _plot(results: dict, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rows = results["mismatches"]
    x = range(len(rows))
    for offset, method in ((-0.2, "plain_qat"), (0.2, "distillation")):
        left.bar([i + offset for i in x], [r[method]["mismatches"] for r in rows], width=0.4, label=method)
    left.set_xticks(list(x), [f"seed {r['seed']}" for r in rows])
    left.set_ylabel(f"mismatches of {results['setting']['test_samples']}")
    left.set_title(f"{results['setting']['bits']}-bit W+A, {results['setting']['fine_tuning_epochs']} epoch(s)")
    left.legend()
    names = ["plain_qat", "distillation", "distillation_cached"]
    right.bar(names, [1000 * results["timing"][n]["seconds_per_step"] for n in names])
    right.set_ylabel("ms per training step")
    right.set_title("training-time overhead")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
