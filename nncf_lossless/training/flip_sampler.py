"""Flip-focused sampling (``training.sampling.mode: flip_focused``): draw more often the training images
where the compressed model disagrees with its reference, or where the reference itself is unsure.

Each epoch is a draw of ``N`` indices (``N`` = the training set's size, so the budget in steps is the
uniform sampler's). Image ``i``'s expected count in the draw is::

    e_i = floor + (1 - floor) * N * h_i / sum(h),   h_i = flip_weight * flip_i + margin_weight * (1 - gap_i)

where ``flip_i`` is 1 if, the last time the image was drawn, the student's top-1 class differed from
the teacher's (on the same augmented input; the teacher's logits are the distillation loss's when it
runs, else the reference's on the clean image), and ``gap_i`` is the reference's top-1 minus top-2
softmax probability on the clean image. Images never drawn yet get the mean ``h`` (neutral), so the
first epoch is uniform. ``floor`` (0 to 1) keeps every image in play: its expected count per epoch is
at least ``floor``, and systematic sampling draws an image with ``e_i < 1`` with probability exactly
``e_i``; ``floor: 1`` is uniform sampling without replacement.

The draw depends only on ``(seed, epoch)`` and the scores, never on torch's global RNG, and is
sharded by rank like ``DistributedSampler`` (padded by wrapping to a multiple of the world size,
rank ``r`` takes positions ``r, r + W, ...``): the shards are disjoint and together cover the draw.
Under DDP, each rank observes its own shard; :meth:`set_epoch` merges every rank's observations
(an all-reduce) before drawing, so every rank computes the same weights. :meth:`state_dict` holds
the scores, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler


class FlipFocusedSampler(Sampler[int]):
    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, floor: float = 0.5,
                 flip_weight: float = 1.0, margin_weight: float = 1.0, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= floor <= 1:
            raise ValueError(f"floor must be in [0, 1], got {floor}")
        self.n, self.batch_size, self.seed, self.floor = num_samples, batch_size, seed, floor
        self.flip_weight, self.margin_weight = flip_weight, margin_weight
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.gap = torch.zeros(num_samples)  # the reference's top-1 minus top-2 probability, clean images
        self.flip = torch.full((num_samples,), float("nan"))  # last observed disagreement; nan: never drawn
        self.pending = torch.zeros(num_samples)  # this epoch's observations (sum) on this rank...
        self.pending_count = torch.zeros(num_samples)  # ...and how many
        self._order: list[int] | None = None
        self.reference_logits: torch.Tensor | None = None

    # ---- scores ------------------------------------------------------------------------------

    def set_reference(self, logits: torch.Tensor) -> None:
        """The reference's logits on every (clean, un-augmented) training image, in dataset order."""
        self.reference_logits = torch.as_tensor(logits, dtype=torch.float32)
        top2 = F.softmax(self.reference_logits, 1).topk(2, dim=1).values
        self.gap = top2[:, 0] - top2[:, 1]

    def observe(self, step: int, student: torch.Tensor, teacher: torch.Tensor | None = None,
                rows: torch.Tensor | None = None) -> None:
        """Records batch ``step`` of this rank's epoch: the student's logits and (optionally) the teacher's on
        the same inputs; ``rows`` (bool) marks the rows that are dataset images (mixed rows are not)."""
        order = self._epoch_order()
        idx = torch.tensor(order[step * self.batch_size: step * self.batch_size + len(student)], dtype=torch.long)
        if teacher is None and self.reference_logits is None:
            raise RuntimeError("FlipFocusedSampler.observe: no teacher logits given and set_reference() not called")
        s_top = student.detach().argmax(1).cpu()
        t_top = teacher.detach().argmax(1).cpu() if teacher is not None else self.reference_logits[idx].argmax(1)
        keep = torch.ones(len(idx), dtype=torch.bool) if rows is None else rows.cpu().bool()
        self.pending.index_add_(0, idx[keep], (s_top != t_top)[keep].float())
        self.pending_count.index_add_(0, idx[keep], torch.ones(int(keep.sum())))

    def hardness(self) -> torch.Tensor:
        flip = self.flip
        h = self.margin_weight * (1 - self.gap) + self.flip_weight * torch.nan_to_num(flip, nan=0.0)
        seen = ~torch.isnan(flip)
        if 0 < int(seen.sum()) < self.n:
            h = torch.where(seen, h, h[seen].mean())  # never drawn yet: neutral
        elif not bool(seen.any()):
            h = torch.ones(self.n)  # nothing observed: uniform
        return h

    def expected_counts(self) -> torch.Tensor:
        """``e_i`` above, summing to ``N``."""
        h = self.hardness().double()
        total = float(h.sum())
        if total <= 0:
            return torch.ones(self.n, dtype=torch.float64)
        return self.floor + (1 - self.floor) * self.n * h / total

    # ---- the draw ----------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Merges the observations so far (all ranks) into the scores, then fixes this epoch's draw."""
        self._merge()
        self.epoch = epoch
        self._order = None

    def draw(self) -> torch.Tensor:
        """The whole epoch's ``N`` indices (every rank's shard together), deterministic in (seed, epoch, scores)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        e = self.expected_counts()
        edges = torch.cumsum(e, 0)
        edges[-1] = self.n  # exact, whatever the rounding
        points = torch.rand(1, generator=g, dtype=torch.float64) + torch.arange(self.n, dtype=torch.float64)
        picks = torch.searchsorted(edges, points, right=True).clamp_max(self.n - 1)
        return picks[torch.randperm(self.n, generator=g)]

    def _epoch_order(self) -> list[int]:
        if self._order is None:
            full = self.draw().tolist()
            total = math.ceil(self.n / self.num_replicas) * self.num_replicas
            full += full[: total - len(full)]
            self._order = full[self.rank::self.num_replicas]
        return self._order

    def __iter__(self) -> Iterator[int]:
        return iter(self._epoch_order())

    def __len__(self) -> int:
        return math.ceil(self.n / self.num_replicas)

    def end_epoch(self) -> None:
        """Merges every rank's observations into the scores (call on all ranks, before checkpointing)."""
        self._merge()

    def _merge(self) -> None:
        pending, count = self.pending.clone(), self.pending_count.clone()
        if self.num_replicas > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            both = torch.stack([pending, count])
            torch.distributed.all_reduce(both)
            pending, count = both[0], both[1]
        seen = count > 0
        self.flip[seen] = pending[seen] / count[seen]
        self.pending.zero_()
        self.pending_count.zero_()

    # ---- checkpoint --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"flip": self.flip.clone(), "pending": self.pending.clone(), "pending_count": self.pending_count.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.flip, self.pending, self.pending_count = (state[k].clone() for k in ("flip", "pending", "pending_count"))
        self._order = None
