"""Hint-point selection by clustering the teacher's layers (PURSUhInT, Keser et al., 2023).

The teacher runs on N samples; each candidate layer's output is global-average-pooled to an
N x C matrix; layers are compared pairwise (``1 - similarity``, :mod:`nncf_lossless.algorithms.hint_distillation.similarity`)
and clustered in depth order into K groups by k-medoids whose initial centres are spread evenly
over depth. The K medoids, in depth order, are the hint points.

Candidates default to the model's blocks: modules whose class is a residual block (``*Block``,
``Bottleneck``, ``InvertedResidual``) and ``nn.Sequential`` groups that hold a convolution directly
(a stem, a conv-BN-ReLU unit), outermost first and never one inside another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nncf_lossless.algorithm import batch_inputs
from nncf_lossless.algorithms.hint_distillation.similarity import distance_matrix
from nncf_lossless.errors import ConfigError

_BLOCK_SUFFIXES = ("Block", "Bottleneck", "InvertedResidual")


@dataclass
class HintSelection:
    points: list[str]  # the chosen layers (medoids), in depth order
    candidates: list[str]  # every clustered layer, in depth order
    distances: np.ndarray  # len(candidates) x len(candidates), 1 - similarity
    assignment: list[int]  # cluster index of each candidate
    metric: str
    samples: int

    def to_json(self) -> dict[str, Any]:
        return {"points": self.points, "candidates": self.candidates, "metric": self.metric, "samples": self.samples,
                "assignment": self.assignment, "distances": np.round(self.distances, 6).tolist()}


def candidate_layers(model: nn.Module) -> list[str]:
    """Names of the default candidate layers of ``model`` (definition order; see the module docstring)."""
    found: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(parent + ".") for parent in found):
            continue
        is_block = type(module).__name__.endswith(_BLOCK_SUFFIXES)
        is_unit = isinstance(module, nn.Sequential) and any(isinstance(c, nn.modules.conv._ConvNd) for c in module.children())
        if is_block or (is_unit and not any(type(m).__name__.endswith(_BLOCK_SUFFIXES) for m in module.modules())):
            found.append(name)
    return found


def stage_ends(candidates: Sequence[str]) -> list[str]:
    """The conventional hint points: the last candidate under each parent module (each ResNet stage's end).

    Top-level candidates (a stem) are no stage of their own unless every candidate is top-level.
    """
    last: dict[str, str] = {}
    for name in candidates:
        last[name.rpartition(".")[0]] = name
    staged = [name for parent, name in last.items() if parent]
    return staged or list(last.values())


@torch.no_grad()
def layer_features(model: nn.Module, batches: Iterable[Any], names: Sequence[str], samples: int) -> tuple[list[str], list[np.ndarray]]:
    """Globally average-pooled outputs (N x C) of the named layers on the first ``samples`` inputs.

    Returns the names re-ordered by when each layer first ran (depth order) and their features.
    """
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ConfigError(f"hint_points: no module named {missing[0]!r} in the model")
    outputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    order: list[str] = []

    def hook(name: str):
        def record(_module, _args, output):
            if name not in order:
                order.append(name)
            out = output[0] if isinstance(output, (tuple, list)) else output
            outputs[name].append((out.mean(dim=tuple(range(2, out.dim()))) if out.dim() > 2 else out).float().cpu())
        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    seen = 0
    try:
        for batch in batches:
            if seen >= samples:
                break
            x = batch_inputs(batch)[: samples - seen]
            model(x.to(device))
            seen += len(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if seen < 2:
        raise ConfigError(f"samples: hint-point selection needs at least 2 samples, got {seen}")
    ran = order + [n for n in names if n not in order]
    return ran, [torch.cat(outputs[n])[:seen].numpy() if outputs[n] else np.zeros((seen, 1)) for n in ran]


def cluster_in_depth(distances: np.ndarray, k: int, *, seed: int = 0, restarts: int = 8) -> tuple[list[int], list[int]]:
    """k-medoids over layers: returns (medoid indices in depth order, cluster index of every layer).

    The first start spreads the centres evenly over depth; ``restarts`` more start from centres
    drawn with ``seed``. The clustering with the lowest total distance to its medoids wins (ties:
    the earlier start), so the result is deterministic for a seed.
    """
    n = len(distances)
    if not 1 <= k <= n:
        raise ConfigError(f"num_points: {k} hint points asked for, but there are {n} candidate layers")
    rng = np.random.default_rng(seed)
    starts = [np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))]
    starts += [np.sort(rng.choice(n, size=k, replace=False)) for _ in range(restarts)]
    best: tuple[float, list[int], list[int]] | None = None
    for start in starts:
        medoids = _k_medoids(distances, list(start) if len(start) == k else list(range(k)))
        assignment = [int(np.argmin(distances[i, medoids])) for i in range(n)]
        cost = float(sum(distances[i, medoids[a]] for i, a in enumerate(assignment)))
        if best is None or cost < best[0] - 1e-12:
            best = (cost, medoids, assignment)
    return best[1], best[2]


def select_hint_points(model: nn.Module, batches: Iterable[Any], *, num_points: int = 3, metric: str = "linear_cka",
                       samples: int = 1000, seed: int = 0, candidates: Sequence[str] | None = None) -> HintSelection:
    """Runs the teacher ``model`` on ``samples`` inputs and returns its clustered hint points."""
    names = list(candidates) if candidates else candidate_layers(model)
    if not names:
        raise ConfigError("hint_points: found no candidate layers (blocks or conv groups); list them in 'candidates'")
    names, features = layer_features(model, batches, names, samples)
    distances = distance_matrix(features, metric)
    medoids, assignment = cluster_in_depth(distances, num_points, seed=seed)
    return HintSelection([names[i] for i in medoids], names, distances, assignment, metric, len(features[0]))


def _k_medoids(distances: np.ndarray, medoids: list[int]) -> list[int]:
    n = len(distances)
    for _ in range(100):
        assignment = np.argmin(distances[:, medoids], axis=1)
        updated = []
        for c in range(len(medoids)):
            members = np.flatnonzero(assignment == c)
            if members.size == 0:  # an empty cluster keeps its centre
                updated.append(medoids[c])
                continue
            updated.append(int(members[np.argmin(distances[np.ix_(members, members)].sum(axis=1))]))
        # Distinct medoids in depth order; a collision (two clusters on one layer) takes the nearest free layer.
        updated = _distinct(sorted(updated), n)
        if updated == medoids:
            break
        medoids = updated
    return medoids


def _distinct(medoids: list[int], n: int) -> list[int]:
    out: list[int] = []
    for m in medoids:
        while m in out:
            m = m + 1 if m + 1 < n else min(set(range(n)) - set(out))
        out.append(m)
    return sorted(out)
