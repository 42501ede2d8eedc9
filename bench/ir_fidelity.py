"""Deployment fidelity: how often the exported IR and the PyTorch model it came from disagree.

For each bit width, the FP32 reference is compressed (NNCF PTQ, optionally followed by a few QAT
epochs), exported, and run on OpenVINO CPU in f32 (with and without OpenVINO's low-precision
transformations) and at the CPU's default precision. Reported per run: top-1 disagreements
between PyTorch and the IR (per 10,000 samples), logit drift, mismatches against the reference
measured in PyTorch and on the IRs, and the first diverging layer (``diff-layers``).

    python bench/ir_fidelity.py --config configs/cifar10_resnet20_int8.json \
        --set dataset.path=../shared/data/cifar10-jpeg.zip --set model.checkpoint=runs/ref/reference.pt
    python bench/ir_fidelity.py --config configs/digits_int8.json   # trains its digits reference

Results: ``bench/results/ir_fidelity_<name>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from nncf_lossless.checker.metrics import compare
from nncf_lossless.checkpoint import write_json
from nncf_lossless.config import load_config
from nncf_lossless.controller import create_compressed_model
from nncf_lossless.data import load_dataset
from nncf_lossless.models import build_model
from nncf_lossless.training.loop import fit_epoch, make_loaders, make_lr_schedule, make_optimizer, predict, seed_everything
from nncf_lossless.training.reference import load_or_train_reference

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--qat-epochs", type=int, default=0, help="QAT epochs after PTQ (default 0: PTQ only)")
    parser.add_argument("--name", default=None, help="results file suffix (default: the config's stem)")
    parser.add_argument("--no-layer-diff", action="store_true", help="skip diff-layers (for code without it)")
    args = parser.parse_args()

    config = load_config(args.config, args.overrides)
    seed_everything(config["training"]["seed"])
    data = load_dataset(config["dataset"], seed=config["training"]["seed"])
    loaders = make_loaders(data, config["training"])
    reference = build_model(config["model"], num_classes=len(data.class_names), in_channels=data.sample_size[1])
    from rich.console import Console

    with tempfile.TemporaryDirectory() as tmp:
        load_or_train_reference(reference, config, loaders, Path(tmp), Console(stderr=True))
    ref_logits, labels = predict(reference, loaders.test)
    inputs = torch.cat([x for x, _ in loaders.test]).numpy()

    runs = []
    for bits in args.bits:
        started = time.perf_counter()
        cfg = copy.deepcopy(config)
        cfg["compression"] = [{**entry, "weights": {"bits": bits}, "activations": {"bits": bits}}
                              if entry["algorithm"] == "quantization" else entry for entry in cfg["compression"]]
        seed_everything(cfg["training"]["seed"])
        ctrl, model = create_compressed_model(copy.deepcopy(reference), cfg, calibration_data=loaders.calibration,
                                              epochs=max(args.qat_epochs, 1), steps_per_epoch=len(loaders.train))
        if args.qat_epochs:
            optimizer = make_optimizer(model.parameters(), cfg["training"])
            schedule = make_lr_schedule(optimizer, cfg["training"], args.qat_epochs * len(loaders.train))
            for epoch in range(args.qat_epochs):
                fit_epoch(model, loaders.train, optimizer, schedule, ctrl, Console(stderr=True), f"QAT {bits}-bit {epoch + 1}")
        comp_logits, _ = predict(model, loaders.test)
        with tempfile.TemporaryDirectory() as tmp:
            paths = ctrl.export(Path(tmp))
            run = {"bits": bits, "qat_epochs": args.qat_epochs, "num_samples": len(labels),
                   "pytorch": _summary(compare(ref_logits, comp_logits, labels)), "openvino": []}
            ir_ref = _run_ir(paths["reference"], inputs, {"INFERENCE_PRECISION_HINT": "f32", "EXECUTION_MODE_HINT": "ACCURACY"})
            for label, props in (("f32", {"INFERENCE_PRECISION_HINT": "f32", "EXECUTION_MODE_HINT": "ACCURACY"}),
                                 ("f32, LP_TRANSFORMS_MODE off", {"INFERENCE_PRECISION_HINT": "f32", "EXECUTION_MODE_HINT": "ACCURACY",
                                                                  "LP_TRANSFORMS_MODE": False}),
                                 ("CPU default", {})):
                ir_comp = _run_ir(paths["compressed"], inputs, props)
                run["openvino"].append({
                    "mode": label,
                    "torch_vs_ir_disagreements": int((ir_comp.argmax(1) != comp_logits.argmax(1)).sum()),
                    "per_10000": 1e4 * float((ir_comp.argmax(1) != comp_logits.argmax(1)).mean()),
                    "max_abs_logit_diff": float(np.abs(ir_comp - comp_logits).max()),
                    "mean_abs_logit_diff": float(np.abs(ir_comp - comp_logits).mean()),
                    # What ships: the compressed IR against the FP32 reference IR, both measured on OpenVINO.
                    "ir_measured": _summary(compare(ir_ref, ir_comp, labels)),
                })
            if not args.no_layer_diff:
                from nncf_lossless.export.layer_diff import diff_layers

                report = diff_layers(model, paths["compressed"], inputs[:256], ctrl.example_input)
                run["layer_diff"] = {k: report[k] for k in ("first_divergence", "first_rounding_tie", "logits")}
        run["seconds"] = time.perf_counter() - started
        runs.append(run)
        f32 = run["openvino"][0]
        print(f"{bits}-bit: PyTorch mismatches {run['pytorch']['mismatches']}, IR mismatches {f32['ir_measured']['mismatches']}, "
              f"torch-vs-IR disagreements {f32['torch_vs_ir_disagreements']} of {len(labels)} "
              f"({f32['per_10000']:.1f} per 10,000), max drift {f32['max_abs_logit_diff']:.3f}")

    name = args.name or args.config.stem
    result = {"config": str(args.config), "overrides": args.overrides, "openvino": ov.get_version(),
              "reference_accuracy": float(np.mean(ref_logits.argmax(1) == labels)), "runs": runs}
    write_json(result, RESULTS / f"ir_fidelity_{name}.json")
    _plot(result, RESULTS / f"ir_fidelity_{name}.png")
    print(f"wrote {RESULTS / f'ir_fidelity_{name}.json'}")


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("mismatches", "mismatches_reference_correct")} | {
        "reference_accuracy": metrics["reference"]["accuracy"], "compressed_accuracy": metrics["compressed"]["accuracy"]}


def _run_ir(path: Path, inputs: np.ndarray, props: dict[str, Any], batch: int = 256) -> np.ndarray:
    compiled = ov.Core().compile_model(str(path), "CPU", props)
    return np.concatenate([compiled(inputs[i : i + batch])[0] for i in range(0, len(inputs), batch)])


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    modes = [o["mode"] for o in result["runs"][0]["openvino"]]
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        values = [next(o for o in run["openvino"] if o["mode"] == mode)["per_10000"] for run in result["runs"]]
        ax.bar(np.arange(len(result["runs"])) + i * width, values, width, label=mode)
    ax.set_xticks(np.arange(len(result["runs"])) + width * (len(modes) - 1) / 2,
                  [f"{run['bits']}-bit" for run in result["runs"]])
    ax.set_ylabel("PyTorch vs IR top-1 disagreements per 10,000")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
