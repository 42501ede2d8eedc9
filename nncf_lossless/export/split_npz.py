"""A dataset split as the ``.npz`` that ``check``, ``bundle`` and ``diff-layers --data`` read.

The file holds ``inputs`` (N, C, H, W) float32, normalised exactly as the model saw them in
training and evaluation (the IRs take normalised inputs), and ``labels`` (N,) int64: the format
:func:`nncf_lossless.checker.core.load_samples` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nncf_lossless.checker.atomic import atomic_write
from nncf_lossless.data import DataBundle, load_dataset
from nncf_lossless.errors import ConfigError

# The names ``--split`` takes. ``train`` is the training images without augmentation (what
# calibration sees); ``validation`` exists where the dataset has that split.
SPLITS = ("test", "validation", "train")
_ATTRIBUTE = {"test": "test", "validation": "validation", "train": "calibration"}


def split_dataset(data: DataBundle, split: str) -> Dataset:
    """The deterministic dataset of ``split`` (one of :data:`SPLITS`)."""
    if split not in _ATTRIBUTE:
        raise ConfigError(f"--split: unknown split {split!r}; known: {', '.join(SPLITS)}")
    dataset = getattr(data, _ATTRIBUTE[split], None)
    if dataset is None:
        raise ConfigError(f"--split: this dataset has no {split} split")
    return dataset


def split_arrays(data: DataBundle, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs float32, labels int64)`` of a split, in the dataset's order."""
    dataset = split_dataset(data, split)
    if len(dataset) == 0:
        raise ConfigError(f"--split: the {split} split of this dataset is empty")
    xs, ys = zip(*DataLoader(dataset, batch_size=512, shuffle=False))
    return torch.cat(xs).numpy().astype(np.float32, copy=False), torch.cat(ys).numpy().astype(np.int64, copy=False)


def write_split(config: dict[str, Any], split: str, path: str | Path) -> tuple[Path, int]:
    """Writes the config's ``split`` to ``path`` atomically; returns the path and the sample count."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"--output: {path} must end in .npz")
    data = load_dataset(config["dataset"], seed=config["training"]["seed"])
    inputs, labels = split_arrays(data, split)
    atomic_write(path, lambda f: np.savez_compressed(f, inputs=inputs, labels=labels))
    return path, len(labels)
