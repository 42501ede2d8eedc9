"""The training loop's parts: loaders, optimizer and LR schedule, one epoch of fine-tuning, evaluation.

Plain functions over a model and (optionally) a compression controller; they know nothing of run
directories. Under torchrun, :func:`make_loaders` shards the training data and :func:`evaluate`
gathers every rank's logits, so counts are the single-process ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from nncf_lossless import distributed
from nncf_lossless.controller import CompressionController
from nncf_lossless.data import DataBundle
from nncf_lossless.errors import ConfigError
from nncf_lossless.training.flip_sampler import FlipFocusedSampler


@dataclass
class Loaders:
    train: DataLoader
    test: DataLoader
    calibration: DataLoader
    validation: DataLoader | None = None  # dataset.validation: what selection and tuning score on


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: 'cuda' asked for, but torch sees no CUDA device")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loaders(data: DataBundle, train_cfg: dict[str, Any], dctx: distributed.Context | None = None) -> Loaders:
    """Train, test and calibration loaders; under DDP the train loader reads this rank's shard
    (``batch_size`` is per process)."""
    workers = train_cfg["num_workers"]
    sampling = train_cfg.get("sampling") or {"mode": "uniform"}
    if sampling["mode"] == "flip_focused":
        world, rank = (dctx.world_size, dctx.rank) if dctx is not None and dctx.enabled else (1, 0)
        sampler = FlipFocusedSampler(len(data.train), train_cfg["batch_size"], seed=train_cfg["seed"],
                                     floor=sampling["floor"], flip_weight=sampling["flip_weight"],
                                     margin_weight=sampling["margin_weight"], num_replicas=world, rank=rank)
        train = DataLoader(data.train, batch_size=train_cfg["batch_size"], sampler=sampler, num_workers=workers)
    elif dctx is not None and dctx.enabled:
        sampler = DistributedSampler(data.train, num_replicas=dctx.world_size, rank=dctx.rank, shuffle=True,
                                     seed=train_cfg["seed"])
        train = DataLoader(data.train, batch_size=train_cfg["batch_size"], sampler=sampler, num_workers=workers)
    else:
        train = DataLoader(data.train, batch_size=train_cfg["batch_size"], shuffle=True, num_workers=workers)
    validation = getattr(data, "validation", None)
    return Loaders(
        train=train,
        test=DataLoader(data.test, batch_size=train_cfg["eval_batch_size"], num_workers=workers),
        calibration=DataLoader(data.calibration, batch_size=train_cfg["batch_size"], num_workers=workers),
        validation=None if validation is None else DataLoader(validation, batch_size=train_cfg["eval_batch_size"],
                                                               num_workers=workers),
    )


def make_optimizer(params: Any, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    cls = torch.optim.Adam if cfg["optimizer"] == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def make_lr_schedule(optimizer: torch.optim.Optimizer, cfg: dict[str, Any],
                     total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg["lr_schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=True,
                    disable=not console.is_terminal)


def fit_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
              lr_schedule: torch.optim.lr_scheduler.LRScheduler, ctrl: CompressionController | None,
              console: Console, description: str, after_backward: Any = None, after_step: Any = None) -> float:
    """One epoch of cross-entropy plus the controller's terms (or the controller's loss alone if it
    owns the task loss); returns the mean training loss. ``after_backward()``, if given, runs
    between the backward pass and the optimizer step (DDP: averaging gradients DDP does not own);
    ``after_step()`` after the optimizer step (the weight average's update)."""
    model.train()
    device = next(model.parameters()).device
    if ctrl is not None:
        ctrl.scheduler.epoch_step()
    total, count = 0.0, 0
    with progress_bar(console) as bar:
        task = bar.add_task(description, total=len(loader), loss=0.0)
        observe = getattr(loader.sampler, "observe", None) if ctrl is not None else None
        for step, (x, y) in enumerate(loader):
            x, y = x.to(device), y.to(device)
            if ctrl is not None:
                ctrl.scheduler.step()
                x = _prepared_inputs(ctrl, x)
            out = model(x)
            if ctrl is not None and ctrl.owns_task_loss:
                loss = ctrl.loss(out, y, x)
            else:
                loss = F.cross_entropy(out, y) + (ctrl.loss(out, y, x) if ctrl is not None else 0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            lr_schedule.step()
            if observe is not None:
                observe(step, out, *_teacher_view(ctrl))
            total, count = total + loss.item() * len(y), count + len(y)
            bar.update(task, advance=1, loss=total / count)
    return total / max(count, 1)


def _prepared_inputs(ctrl: CompressionController, x: torch.Tensor) -> torch.Tensor:
    """The batch after every algorithm's ``prepare_inputs`` (distillation's mixup/cutmix for the distillation loss)."""
    for algo in ctrl.algorithms:
        x = algo.prepare_inputs(x)
    return x


def _teacher_view(ctrl: CompressionController | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The teacher's logits on the batch just trained on (if an algorithm computed them) and which rows are dataset images."""
    for algo in ctrl.algorithms if ctrl is not None else []:
        logits, clean = algo.teacher_view()
        if logits is not None:
            return logits, clean
    return None, None


def evaluate(model: nn.Module, loader: DataLoader, dctx: distributed.Context) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict` over the whole evaluation set; under DDP each rank runs its shard and all get every row."""
    if not dctx.enabled:
        return predict(model, loader)
    indices = distributed.shard(dctx, len(loader.dataset))
    logits, labels = predict(model, DataLoader(Subset(loader.dataset, indices.tolist()), batch_size=loader.batch_size))
    n = len(loader.dataset)
    return distributed.gather_in_order(dctx, logits, indices, n), distributed.gather_in_order(dctx, labels, indices, n)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        pairs = [(model(x.to(device)).cpu(), y) for x, y in loader]
    finally:
        model.train(was_training)
    return torch.cat([p[0] for p in pairs]).numpy(), torch.cat([p[1] for p in pairs]).numpy()


def start_epoch(loaders: Loaders, dctx: distributed.Context, seed: int, epoch: int) -> None:
    """Under DDP: the sampler's shuffle for this epoch and this rank's augmentation seed; a flip-focused
    sampler draws this epoch from the last one's observations (with or without DDP)."""
    if isinstance(loaders.train.sampler, FlipFocusedSampler) and not dctx.enabled:
        loaders.train.sampler.set_epoch(epoch)
    if dctx.enabled:
        loaders.train.sampler.set_epoch(epoch)
        torch.manual_seed(distributed.epoch_seed(seed, epoch, dctx.rank))


def wrap_ddp(model: nn.Module, config: dict[str, Any], dctx: distributed.Context) -> nn.Module:
    """The model the training loop runs: DDP-wrapped under torchrun, else the model itself."""
    if not dctx.enabled:
        return model
    entries = config["compression"]
    # Parameters that stop getting gradients mid-run (BN affine frozen, hints-only epochs) need DDP's unused-parameter scan.
    unused = any(e.get("freeze_affine") for e in entries if e["algorithm"] == "frozen_bn") or any(
        e.get("hints_only_epochs", 0) > 0 for e in entries if e["algorithm"] == "hint_distillation")
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=unused)
