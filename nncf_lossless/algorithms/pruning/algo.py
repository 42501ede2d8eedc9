"""The ``pruning`` entry: NNCF 3 unstructured pruning with NNCF's schedulers.

Magnitude modes (``UNSTRUCTURED_MAGNITUDE_LOCAL`` / ``_GLOBAL``) recompute masks from weight
magnitudes at each epoch start (``epoch_step``) along the schedule; the regularization-based mode
learns masks and adds NNCF's ``RBLoss`` (times ``rb.weight``) to ``ctrl.loss()``, its target ratio
following the schedule. ``batch_norm_adaptation`` re-estimates BatchNorm statistics with
``nncf.batch_norm_adaptation`` once the initial masks are in, since pruned weights shift every
activation's mean and variance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nncf
import torch
from nncf.torch.function_hook.pruning.magnitude.schedulers import (
    ExponentialMagnitudePruningScheduler,
    MultiStepMagnitudePruningScheduler,
)
from nncf.torch.function_hook.pruning.rb.losses import RBLoss
from nncf.torch.function_hook.pruning.rb.schedulers import ExponentialRBPruningScheduler, MultiStepRBPruningScheduler
from nncf.torch.function_hook.pruning.scheduler_fns import exponential_ratio_scheduler, multi_step_ratio_scheduler
from nncf.torch.function_hook.pruning.statistics import pruning_statistic
from torch import nn

from nncf_lossless import registry
from nncf_lossless.algorithm import CompressionContext
from nncf_lossless.algorithms.shared_params import BN_ADAPTATION_SCHEMA, IGNORED_SCOPE_SCHEMA, to_ignored_scope
from nncf_lossless.errors import ConfigError

MODES = ["UNSTRUCTURED_MAGNITUDE_LOCAL", "UNSTRUCTURED_MAGNITUDE_GLOBAL", "UNSTRUCTURED_REGULARIZATION_BASED"]
_RATIO = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["algorithm"],
    "properties": {
        "algorithm": {"const": "pruning"},
        "mode": {"enum": MODES, "default": "UNSTRUCTURED_MAGNITUDE_LOCAL"},
        "ratio": {**_RATIO, "default": 0.5},
        "ignored_scope": IGNORED_SCOPE_SCHEMA,
        "schedule": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                "type": {"enum": ["constant", "multistep", "exponential"], "default": "constant"},
                # multistep: {"<epoch>": ratio}; must include "0".
                "steps": {"type": "object", "patternProperties": {"^[0-9]+$": _RATIO}, "additionalProperties": False,
                          "required": ["0"]},
                # exponential: from initial_ratio at epoch 0 to `ratio` at target_epoch.
                "initial_ratio": {**_RATIO, "default": 0.0},
                "target_epoch": {"type": "integer", "minimum": 1, "default": 1},
            },
            "if": {"properties": {"type": {"const": "multistep"}}, "required": ["type"]},
            "then": {"required": ["steps"]},
        },
        "rb": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {"p": {"type": "number", "exclusiveMinimum": 0, "default": 0.05},
                           "weight": {"type": "number", "minimum": 0, "default": 1.0}},
        },
        "batch_norm_adaptation": BN_ADAPTATION_SCHEMA,
    },
}


@dataclass
class Pruning:
    params: dict[str, Any]
    name: str = "pruning"
    model: nn.Module | None = field(default=None, repr=False)
    scheduler: Any = field(default=None, repr=False)
    rb_loss: RBLoss | None = field(default=None, repr=False)
    epoch: int = 0

    def __post_init__(self) -> None:
        schedule = self.params["schedule"]
        if schedule["type"] == "exponential" and schedule["initial_ratio"] >= self.params["ratio"]:
            raise ConfigError(
                f"schedule.initial_ratio: {schedule['initial_ratio']} must be below ratio {self.params['ratio']}"
            )

    @property
    def mode(self) -> nncf.PruneMode:
        return nncf.PruneMode[self.params["mode"]]

    @property
    def regularization_based(self) -> bool:
        return self.mode == nncf.PruneMode.UNSTRUCTURED_REGULARIZATION_BASED

    def apply(self, model: nn.Module, ctx: CompressionContext) -> nn.Module:
        ratio = None if self.regularization_based else self._ratio_at(0)
        try:
            model = nncf.prune(model, self.mode, ratio=ratio, ignored_scope=to_ignored_scope(self.params.get("ignored_scope")),
                               examples_inputs=ctx.example_input)
        except nncf.ValidationError as err:
            raise ConfigError("ignored_scope: " + " ".join(str(err).split())) from err
        bn = self.params["batch_norm_adaptation"]
        if bn["enabled"]:
            nncf.batch_norm_adaptation(model, ctx.nncf_dataset("batch_norm_adaptation"),
                                       num_iterations=bn["num_iterations"])
        return model

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None:
        self.model = model
        schedule, target = self.params["schedule"], self.params["ratio"]
        if self.regularization_based:
            self.rb_loss = RBLoss(model, target_ratio=self._ratio_at(0), p=self.params["rb"]["p"])
        if schedule["type"] == "constant":
            self.scheduler = None
        elif schedule["type"] == "multistep":
            steps = {int(k): float(v) for k, v in schedule["steps"].items()}
            self.scheduler = (MultiStepRBPruningScheduler(self.rb_loss, steps) if self.rb_loss is not None
                              else MultiStepMagnitudePruningScheduler(model, mode=self.mode, steps=steps))
        else:
            kwargs = {"initial_ratio": schedule["initial_ratio"], "target_ratio": target,
                      "target_epoch": schedule["target_epoch"]}
            self.scheduler = (ExponentialRBPruningScheduler(self.rb_loss, **kwargs) if self.rb_loss is not None
                              else ExponentialMagnitudePruningScheduler(model, mode=self.mode, **kwargs))

    def _ratio_at(self, epoch: int) -> float:
        """The ratio the schedule sets at the start of ``epoch``."""
        schedule, target = self.params["schedule"], self.params["ratio"]
        if schedule["type"] == "multistep":
            return multi_step_ratio_scheduler(epoch, steps={int(k): v for k, v in schedule["steps"].items()})
        if schedule["type"] == "exponential":
            return exponential_ratio_scheduler(epoch, initial_ratio=schedule["initial_ratio"], target_ratio=target,
                                               target_epoch=schedule["target_epoch"])
        return target

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor | None, inputs: torch.Tensor | None) -> torch.Tensor | None:
        if self.rb_loss is None:
            return None
        return self.params["rb"]["weight"] * self.rb_loss().to(outputs.device)

    def step(self) -> None:
        pass

    def epoch_step(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step(self.epoch)
        self.epoch += 1

    def statistics(self) -> dict[str, Any]:
        stat = pruning_statistic(self.model)
        return {
            "mode": self.params["mode"],
            "target_ratio": self.params["ratio"],
            "scheduled_ratio": self._ratio_at(max(self.epoch - 1, 0)),
            "pruned_ratio": stat.pruning_ratio,
            "global_pruned_ratio": stat.global_pruning_ratio,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        if self.rb_loss is not None and self.epoch > 0:
            # RB target follows the schedule; re-derive it rather than store it.
            self.rb_loss.target_ratio = self._ratio_at(self.epoch - 1)


registry.register(registry.Entry("pruning", SCHEMA, Pruning, stage=10))
