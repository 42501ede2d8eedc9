"""The config's ``repair`` section: flip repair of the exported IR pair, run by the trainer after export.

The search runs on the dataset's validation split (``DataBundle.validation``) and never on the
test split, which is only measured. Without a validation split the run is refused up front, not
after training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nncf_lossless.errors import ConfigError


def repair_requested(config: dict[str, Any]) -> bool:
    return bool(config.get("repair", {}).get("enabled"))


def check_repair_config(config: dict[str, Any], data: Any) -> None:
    """Raises :class:`ConfigError` (one line) if ``repair`` is enabled but cannot run."""
    if not repair_requested(config):
        return
    if not config["export"]["enabled"]:
        raise ConfigError("repair.enabled: repair works on the exported IRs, but export.enabled is false")
    if getattr(data, "validation", None) is None:
        raise ConfigError("repair.enabled: needs a validation split (dataset.validation); this dataset has none, "
                          "and the test split is never searched on")


def repair_after_export(config: dict[str, Any], data: Any, paths: dict[str, str | Path], out: Path) -> dict[str, Any]:
    """Runs ``nncf_lossless.repair`` on the exported pair; returns its report (``budget_met`` says if it held)."""
    from nncf_lossless.checker.cli import progress_bars
    from nncf_lossless.repair.run import repair

    cfg = config["repair"]
    with progress_bars() as progress:
        return repair(paths["reference"], paths["compressed"], _arrays(data.validation), out / cfg["dir"],
                      max_mismatches=cfg["max_mismatches"], test=_arrays(data.test), device=cfg["device"],
                      precision=None if cfg["precision"] == "default" else cfg["precision"],
                      restore_mode=cfg["restore_mode"], progress=progress,
                      sources={"validation": "dataset validation split", "test": "dataset test split"})


def _arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=256)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in loader])
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)
