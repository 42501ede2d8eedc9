"""PyTorch DDP plumbing for the trainer: process group from torchrun, rank-0 writes, exact reductions.

A run is distributed when torchrun (or any launcher) sets ``WORLD_SIZE`` > 1; otherwise every
function here is a no-op and the trainer behaves exactly as a single process. The backend is
chosen from the device: ``nccl`` on CUDA, ``gloo`` on CPU. Nothing assumes a GPU.

Contract used by the trainer:

* calibration and hint selection run once, on rank 0; the compression state is broadcast and the
  other ranks rebuild the identical model from it (:func:`broadcast_object`);
* each rank trains on its DistributedSampler shard; DDP averages the model's gradients, and
  :func:`average_gradients` does the same for parameters outside the DDP module (distillation
  adapters, a teacher trained under Apprentice scheme A);
* evaluation shards the test set without padding and gathers the logits back in order
  (:func:`gather_in_order`), so every count is exactly the single-process count;
* only rank 0 writes files; the others wait at :func:`barrier`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Context:
    """Joins the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # Rank 0 alone exports and checks the IRs at the end; the others wait that long at a barrier.
        dist.init_process_group(backend, timeout=timedelta(hours=2))
    return Context(rank, world_size, local_rank, backend)


def device_for(ctx: Context, device: torch.device) -> torch.device:
    """The rank's own GPU under CUDA; the CPU otherwise."""
    return torch.device("cuda", ctx.local_rank) if ctx.enabled and device.type == "cuda" else device


def teardown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_object(ctx: Context, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (tensors inside travel by pickle, through the CPU)."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_in_order(ctx: Context, rows: np.ndarray, indices: np.ndarray, total: int) -> np.ndarray:
    """Every rank's ``rows`` (for dataset ``indices``) assembled into the full ``total``-row array."""
    if not ctx.enabled:
        return rows
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, (indices, rows))
    out = np.empty((total, *rows.shape[1:]), dtype=rows.dtype)
    for idx, part in parts:
        out[idx] = part
    return out


def shard(ctx: Context, n: int) -> np.ndarray:
    """This rank's indices of an ``n``-sample evaluation set: every world_size-th, no padding."""
    return np.arange(ctx.rank, n, ctx.world_size) if ctx.enabled else np.arange(n)


def average_gradients(ctx: Context, params: Iterable[nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of parameters DDP does not manage."""
    if not ctx.enabled:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(ctx.world_size)


def digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state_dict order: equal digests, equal weights."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes() if tensor.dtype != torch.bfloat16
                 else tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def all_digests(ctx: Context, model: nn.Module) -> list[str]:
    """Each rank's :func:`digest` of its copy of ``model``, by rank."""
    own = digest(model)
    if not ctx.enabled:
        return [own]
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, own)
    return parts


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Augmentation seed of one rank's epoch: resuming at any epoch reproduces it exactly."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)
