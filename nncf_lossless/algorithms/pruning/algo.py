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
from nncf.torch.function_hook.pruning.rb.losses import RBLoss
from nncf.torch.function_hook.pruning.statistics import pruning_statistic
from torch import nn

from nncf_lossless.algorithm import AlgorithmBase, CompressionContext, CompressionStage
from nncf_lossless.algorithms.pruning import schedulers
from nncf_lossless.algorithms.pruning.schema import MODES, SCHEMA  # noqa: F401 (re-exported)
from nncf_lossless.algorithms.shared_params import bn_adaptation_iterations, to_ignored_scope
from nncf_lossless.errors import ConfigError


@dataclass
class Pruning(AlgorithmBase):
    params: dict[str, Any]
    name: str = "pruning"
    model: nn.Module | None = field(default=None, repr=False)
    scheduler: Any = field(default=None, repr=False)
    rb_loss: RBLoss | None = field(default=None, repr=False)
    epoch: int = 0

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
                                       num_iterations=bn_adaptation_iterations(bn, ctx.calibration_data))
        return model

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None:
        self.model = model
        if self.regularization_based:
            self.rb_loss = RBLoss(model, target_ratio=self._ratio_at(0), p=self.params["rb"]["p"])
        self.scheduler = schedulers.make_scheduler(self.params, model, self.mode, self.rb_loss)

    def _ratio_at(self, epoch: int) -> float:
        return schedulers.ratio_at(self.params, epoch)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor | None, inputs: torch.Tensor | None) -> torch.Tensor | None:
        if self.rb_loss is None:
            return None
        return self.params["rb"]["weight"] * self.rb_loss()

    def epoch_step(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step(self.epoch)
        self.epoch += 1

    def compression_stage(self) -> CompressionStage:
        """Fully compressed once the schedule has reached its final ratio (at the epoch started last)."""
        started = max(self.epoch - 1, 0)
        if started >= schedulers.target_reached_at(self.params):
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED if self._ratio_at(started) > 0 else CompressionStage.UNCOMPRESSED

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

