"""``nncf-lossless diff-layers``: resolve the model, the IR and the data, print the layer table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from nncf_lossless.checkpoint import write_json
from nncf_lossless.config import load_config
from nncf_lossless.errors import ConfigError, DataError
from nncf_lossless.export.layer_diff import AGREES, DIVERGES, DOWNSTREAM, ROUNDING_TIE, STATUSES, TIE_DOWNSTREAM, diff_layers
from nncf_lossless.training.trainer import load_compressed


def run_diff_layers(args: argparse.Namespace) -> int:
    config_path, checkpoint = _resolve_model(args.model, args.config)
    given = _inputs(args.data, None, args.samples) if args.data is not None else None  # bad --data fails before any work
    overrides = list(args.overrides)
    if getattr(args, "reference_checkpoint", None) is not None:
        overrides.append(f"model.checkpoint={args.reference_checkpoint}")
    config = load_config(config_path, overrides)
    if checkpoint is None and not config["model"]["checkpoint"]:
        # Quantizing afresh needs the FP32 weights; training them here would be a long surprise.
        raise ConfigError(f"--model: {config_path} names no FP32 reference (model.checkpoint); pass --checkpoint REF.pt "
                          "or a train run's directory")
    ctrl, model, data = load_compressed(config, checkpoint)
    inputs = given if given is not None else _inputs(None, data, args.samples)
    report = diff_layers(model, args.ir, inputs, ctrl.example_input)
    _print(report)
    if args.output:
        write_json(report, args.output)
        print(f"report: {args.output}")
    return 0


def _resolve_model(model: Path, config: Path | None) -> tuple[Path, Path | None]:
    """(config, checkpoint or None) from a run directory, a checkpoint file or a config file."""
    if model.is_dir():
        return config or model / "config.json", model / "checkpoint.pt"
    if not model.is_file():
        raise ConfigError(f"--model: {model} does not exist")
    if model.suffix == ".pt":
        return config or model.parent / "config.json", model
    return model, None


def _inputs(path: Path | None, data: Any, samples: int) -> np.ndarray:
    if path is None:
        n = min(samples, len(data.test))
        return np.stack([data.test[i][0].numpy() for i in range(n)]).astype(np.float32)
    try:
        with np.load(path) as archive:
            if "inputs" not in archive:
                raise DataError(f"--data: {path} has no 'inputs' array (found: {', '.join(archive.files)})")
            return np.asarray(archive["inputs"][:samples], dtype=np.float32)
    except (OSError, ValueError) as err:
        raise DataError(f"--data: cannot read {path} as .npz ({err})") from err


def _print(report: dict[str, Any]) -> None:
    table = Table(title=f"PyTorch vs {report['ir']} on {report['device']} ({report['precision']}), {report['num_samples']} samples")
    for col in ("layer", "kind", "max |diff|", "mean |diff|", "input max |diff|", "flipped", "status"):
        table.add_column(col, justify="left" if col in ("layer", "kind", "status") else "right", no_wrap=True)
    for layer in report["layers"]:
        flipped = layer["flipped_fraction"]
        table.add_row(layer["name"], layer["kind"], f"{layer['max_abs_diff']:.3g}", f"{layer['mean_abs_diff']:.3g}",
                      "" if layer["input_max_abs_diff"] is None else f"{layer['input_max_abs_diff']:.3g}",
                      "" if flipped is None else f"{100 * flipped:.3f}%", layer["status"])
    # Piped, rich would fit the table into 80 columns and fold the layer names: give it room instead.
    console = Console() if sys.stdout.isatty() else Console(width=1000, soft_wrap=True)
    console.print(table)
    for line in summary_lines(report):
        console.print(line, highlight=False)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The verdict under the table, from the same statuses as its rows."""
    counts = {status: sum(layer["status"] == status for layer in report["layers"]) for status in STATUSES}
    logits = report["logits"]
    lines = [f"logits: max |diff| {logits['max_abs_diff']:.4g}, top-1 disagreements {logits['top1_disagreements']}",
             (f"{len(report['layers'])} layers: {counts[DIVERGES]} {DIVERGES}, {counts[DOWNSTREAM]} {DOWNSTREAM} "
              f"(of a divergence), {counts[ROUNDING_TIE]} {ROUNDING_TIE}, {counts[TIE_DOWNSTREAM]} {TIE_DOWNSTREAM} "
              f"(differ only downstream of a rounding tie), {counts[AGREES]} agree")]
    if report["first_divergence"]:
        lines.append(f"first divergence beyond float noise: {report['first_divergence']}")
    elif report["first_rounding_tie"]:
        lines.append(f"no divergence beyond float noise; the {counts[TIE_DOWNSTREAM]} layers that differ are downstream of "
                     f"a rounding tie (first: {report['first_rounding_tie']})")
    else:
        lines.append("no difference beyond float noise")
    return lines
