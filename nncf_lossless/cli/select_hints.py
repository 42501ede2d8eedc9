"""``nncf-lossless select-hints``: the teacher's clustered hint points, as JSON and a heatmap.

Settings come from the config's ``hint_distillation`` entry (if any), then the command line. The
FP32 reference is loaded (``--checkpoint``/``model.checkpoint``, or ``reference.pt`` in the output
directory) or trained there, as ``train`` would, which it says first, with the epochs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from nncf_lossless.algorithms.hint_distillation.hint_points import HintSelection, candidate_layers, select_hint_points, stage_ends
from nncf_lossless.checker.atomic import atomic_write, write_json
from nncf_lossless.cli.main import config_from_args
from nncf_lossless.data import load_dataset
from nncf_lossless.errors import ConfigError
from nncf_lossless.models import build_model
from nncf_lossless.training.loop import make_loaders, seed_everything
from nncf_lossless.training.reference import load_or_train_reference


def run_select_hints(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    entry = next((e for e in config["compression"] if e["algorithm"] == "hint_distillation"), {})
    settings = {"num_points": entry.get("num_points", 3), "metric": entry.get("metric", "linear_cka"),
                "samples": entry.get("samples", 1000), "seed": entry.get("seed", 0), "candidates": entry.get("candidates")}
    settings.update({k: v for k, v in vars(args).items() if k in settings and v is not None})
    seed_everything(config["training"]["seed"])
    data = load_dataset(config["dataset"], seed=config["training"]["seed"])
    loaders = make_loaders(data, config["training"])
    model = build_model(config["model"], num_classes=len(data.class_names), in_channels=data.sample_size[1])
    names = settings["candidates"] or candidate_layers(model)
    if settings["num_points"] > len(names):  # before the reference trains, not after
        raise ConfigError(f"num_points: {settings['num_points']} hint points asked for, but there are {len(names)} candidate layers")
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    load_or_train_reference(model, config, loaders, out, console)
    selection = select_hint_points(model, loaders.calibration, **settings)
    report = {**selection.to_json(), "stage_ends": stage_ends(selection.candidates)}
    write_json(report, out / "hint_points.json")
    plotted = plot_selection(selection, out / "hint_points.png")
    print(f"hint points ({selection.metric}, {selection.samples} samples): {', '.join(selection.points)}")
    print(f"stage ends (conventional): {', '.join(report['stage_ends'])}")
    heatmap = out / "hint_points.png" if plotted else 'none (pip install "nncf-lossless[plots]")'
    print(f"report: {out / 'hint_points.json'}, heatmap: {heatmap}")
    return 0


def plot_selection(selection: HintSelection, path: Path) -> bool:
    """Layer-distance heatmap with the chosen points marked and cluster boundaries drawn.

    Returns ``False`` (and writes nothing) without matplotlib, an optional dependency (extra ``plots``).
    """
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(selection.candidates)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n))
    im = ax.imshow(1 - selection.distances, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label=f"similarity ({selection.metric})")
    ticks = [f"* {c}" if c in selection.points else c for c in selection.candidates]
    ax.set_xticks(range(n), ticks, rotation=90, fontsize=8)
    ax.set_yticks(range(n), ticks, fontsize=8)
    for i, name in enumerate(selection.candidates):
        if name in selection.points:
            ax.plot(i, i, marker="*", color="red", markersize=12)
    for i in range(1, n):
        if selection.assignment[i] != selection.assignment[i - 1]:
            ax.axhline(i - 0.5, color="white", lw=1)
            ax.axvline(i - 0.5, color="white", lw=1)
    ax.set_title("teacher layer similarity; * = hint point")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return True

