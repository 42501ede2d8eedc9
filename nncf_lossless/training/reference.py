"""The FP32 reference: loaded from ``model.checkpoint`` or this run's ``reference.pt``, or trained and checkpointed per epoch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from nncf_lossless import distributed
from nncf_lossless.checkpoint import load_checkpoint, save_checkpoint
from nncf_lossless.errors import ConfigError
from nncf_lossless.training.loop import Loaders, fit_epoch, make_lr_schedule, make_optimizer, start_epoch, wrap_ddp

REFERENCE = "reference.pt"
REFERENCE_PROGRESS = "reference_progress.pt"


def load_or_train_reference(model: nn.Module, config: dict[str, Any], loaders: Loaders, out: Path,
                             console: Console, dctx: distributed.Context | None = None) -> float:
    """Loads the FP32 reference (``model.checkpoint``, or this run's ``reference.pt``) or trains it."""
    given = config["model"]["checkpoint"]
    if given and not Path(given).is_file():
        raise ConfigError(f"model.checkpoint: {given} does not exist")
    path = Path(given) if given else out / REFERENCE
    if path.exists():
        state = load_checkpoint(path)
        try:
            model.load_state_dict(state.get("state_dict", state))
        except (RuntimeError, TypeError, AttributeError) as err:
            first = str(err).strip().splitlines()[-1].strip() if str(err).strip() else type(err).__name__
            raise ConfigError(f"model.checkpoint: {path} does not fit model {config['model']['name']!r} ({first})") from err
        return 0.0
    dctx = dctx or distributed.Context()
    ref_cfg = config["training"]["reference"]
    # Said up front: on CIFAR-10 this is the longest part of a run, and nothing asked for it by name.
    epochs = f"{ref_cfg['epochs']} epoch{'s' if ref_cfg['epochs'] != 1 else ''}"
    console.print(f"No FP32 reference given (model.checkpoint) and no {path}: training one first, {epochs} "
                  "(training.reference.epochs). --checkpoint REF.pt skips this.", highlight=False, soft_wrap=True)
    train_model = wrap_ddp(model, {"compression": []}, dctx)
    optimizer = make_optimizer(model.parameters(), ref_cfg)
    lr_schedule = make_lr_schedule(optimizer, ref_cfg, ref_cfg["epochs"] * len(loaders.train))
    # A long reference (CIFAR-10: hours) must survive a kill too: every epoch is checkpointed, and
    # a run started in this directory again (only --resume gets this far) continues from it.
    progress, start = out / REFERENCE_PROGRESS, 0
    if progress.exists():
        state = load_checkpoint(progress)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        torch.set_rng_state(state["rng"])
        start = int(state["epoch"])
        console.print(f"FP32 reference: resumed after epoch {start}/{ref_cfg['epochs']}")
    started = time.perf_counter()
    for epoch in range(start, ref_cfg["epochs"]):
        start_epoch(loaders, dctx, config["training"]["seed"], epoch)
        loss = fit_epoch(train_model, loaders.train, optimizer, lr_schedule, None, console,
                         description=f"FP32 reference epoch {epoch + 1}/{ref_cfg['epochs']}")
        if dctx.is_main:
            save_checkpoint({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "lr_schedule": lr_schedule.state_dict(), "rng": torch.get_rng_state()}, progress)
        if not console.is_terminal and (epoch + 1) % max(1, ref_cfg["epochs"] // 10) == 0:
            # Without a live progress bar, a line every tenth of the way shows the run is alive.
            console.print(f"FP32 reference epoch {epoch + 1}/{ref_cfg['epochs']}: loss {loss:.4f}")
    if dctx.is_main:
        save_checkpoint({"state_dict": model.state_dict()}, path)
        progress.unlink(missing_ok=True)
    distributed.barrier(dctx)
    return time.perf_counter() - started
