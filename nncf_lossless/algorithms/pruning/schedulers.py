"""The ``pruning`` entry's schedules, on NNCF's pruning schedulers and ratio functions.

:func:`ratio_at` is the ratio the schedule sets at the start of an epoch; :func:`make_scheduler`
the NNCF scheduler that moves the masks (magnitude modes) or the ``RBLoss`` target (regularization-
based mode) along it at each ``epoch_step``, ``None`` for a constant ratio.
"""

from __future__ import annotations

from typing import Any

import nncf
from nncf.torch.function_hook.pruning.magnitude.schedulers import (
    ExponentialMagnitudePruningScheduler,
    MultiStepMagnitudePruningScheduler,
)
from nncf.torch.function_hook.pruning.rb.losses import RBLoss
from nncf.torch.function_hook.pruning.rb.schedulers import ExponentialRBPruningScheduler, MultiStepRBPruningScheduler
from nncf.torch.function_hook.pruning.scheduler_fns import exponential_ratio_scheduler, multi_step_ratio_scheduler
from torch import nn


def ratio_at(params: dict[str, Any], epoch: int) -> float:
    """The ratio the schedule sets at the start of ``epoch``."""
    schedule, target = params["schedule"], params["ratio"]
    if schedule["type"] == "multistep":
        return multi_step_ratio_scheduler(epoch, steps={int(k): v for k, v in schedule["steps"].items()})
    if schedule["type"] == "exponential":
        return exponential_ratio_scheduler(epoch, initial_ratio=schedule["initial_ratio"], target_ratio=target,
                                           target_epoch=schedule["target_epoch"])
    return target


def target_reached_at(params: dict[str, Any]) -> int:
    """The first epoch whose scheduled ratio is the final one."""
    schedule = params["schedule"]
    if schedule["type"] == "multistep":
        return max(int(k) for k in schedule["steps"])
    if schedule["type"] == "exponential":
        return schedule["target_epoch"]
    return 0


def make_scheduler(params: dict[str, Any], model: nn.Module, mode: nncf.PruneMode, rb_loss: RBLoss | None) -> Any:
    schedule, target = params["schedule"], params["ratio"]
    if schedule["type"] == "constant":
        return None
    if schedule["type"] == "multistep":
        steps = {int(k): float(v) for k, v in schedule["steps"].items()}
        return (MultiStepRBPruningScheduler(rb_loss, steps) if rb_loss is not None
                else MultiStepMagnitudePruningScheduler(model, mode=mode, steps=steps))
    kwargs = {"initial_ratio": schedule["initial_ratio"], "target_ratio": target, "target_epoch": schedule["target_epoch"]}
    return (ExponentialRBPruningScheduler(rb_loss, **kwargs) if rb_loss is not None
            else ExponentialMagnitudePruningScheduler(model, mode=mode, **kwargs))
