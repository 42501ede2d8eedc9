"""What one multi-bit training step does: which bit-widths it trains and which blocks it swaps.

Every draw comes from a generator seeded with ``(seed, step)``, not from torch's global RNG: a
resumed run draws exactly what an uninterrupted one drew at the same step, every DDP rank draws
the same (so all ranks run the same forwards), and the data order is left untouched.

* Bit-widths: all of them (``bits_per_step: null``), or the highest, the lowest and
  ``bits_per_step - 2`` others drawn uniformly (the "sandwich rule" of slimmable networks, Yu &
  Huang 2019: the extremes bound the rest, so they are always trained).
* Block swapping: each block of a student bit-width's forward runs, independently with
  probability ``p(step)``, at the next higher bit-width trained in the same step.
  ``p`` falls linearly from ``block_swap.probability`` at step 0 to 0 at
  ``block_swap.until_fraction`` of the planned steps, so the end of training trains every
  bit-width unswapped, as it is deployed. Without a planned length ``p`` stays constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepPlan:
    bits: list[int]  # highest first
    swapped: dict[int, list[str]]  # student bit-width -> blocks run at the next higher trained bit-width
    swap_probability: float


@dataclass(frozen=True)
class MultiBitSchedule:
    bits: list[int]  # highest first
    bits_per_step: int | None
    blocks: list[str]
    swap_probability: float
    swap_until_fraction: float
    total_steps: int | None
    seed: int

    def probability(self, step: int) -> float:
        if self.total_steps is None:
            return self.swap_probability
        end = self.swap_until_fraction * self.total_steps
        return self.swap_probability * max(0.0, 1.0 - step / end) if end > 0 else 0.0

    def plan(self, step: int) -> StepPlan:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % (2**63))
        bits = self.bits
        if self.bits_per_step is not None and self.bits_per_step < len(bits):
            middle = bits[1:-1]
            keep = max(self.bits_per_step - 2, 0)
            picked = sorted(torch.randperm(len(middle), generator=gen)[:keep].tolist())
            bits = [bits[0], *(middle[i] for i in picked), bits[-1]] if self.bits_per_step >= 2 else [bits[0]]
        p = self.probability(step)
        swapped = {}
        for b in bits[1:]:
            draws = torch.rand(len(self.blocks), generator=gen).tolist()
            swapped[b] = [block for block, u in zip(self.blocks, draws) if u < p]
        return StepPlan(bits, swapped, p)
