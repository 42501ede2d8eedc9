"""The ``frozen_bn`` entry: freeze BatchNorm statistics from a point of the training on.

During QAT, BN normalises with batch statistics while the deployed model uses the running
averages folded into the convolution; Lossless AI (Okuno et al., MVA 2021) freezes the statistics
at their moving averages from the middle of training on. The freeze point is stated one way:

- ``at_step: N``: the first N training steps (``ctrl.scheduler.step()`` calls) run unfrozen, the
  step of 0-based index N and all later ones frozen;
- ``at_epoch: E``: the first E epochs (``epoch_step()`` calls) run unfrozen; frozen from the
  ``epoch_step()`` that starts epoch index E, so with a constant number of steps per epoch it is
  the same point as ``at_step: E * steps_per_epoch``;
- ``at_fraction: f`` (default 0.5): ``at_step: round(f * epochs * steps_per_epoch)`` (halves up),
  of the planned training given to ``create_compressed_model``.

``batch_norm_adaptation`` re-estimates the statistics with ``nncf.batch_norm_adaptation`` on the
calibration data right before freezing; ``freeze_affine`` also stops the BN weight and bias from
training. The freezing itself is :mod:`nncf_lossless.algorithms.frozen_bn.modules`; this entry only schedules it,
re-freezes on restore, and touches only the compressed model, never ``ctx.reference``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nncf
from torch import nn

from nncf_lossless.algorithm import AlgorithmBase, CompressionContext, CompressionStage
from nncf_lossless.algorithms.frozen_bn import modules as bn_freeze
from nncf_lossless.algorithms.frozen_bn import schedulers
from nncf_lossless.algorithms.frozen_bn.schema import SCHEMA  # noqa: F401 (re-exported)
from nncf_lossless.algorithms.shared_params import bn_adaptation_iterations
from nncf_lossless.errors import ConfigError

DEFAULT_FRACTION = schedulers.DEFAULT_FRACTION


@dataclass
class FrozenBN(AlgorithmBase):
    params: dict[str, Any]
    name: str = "frozen_bn"
    model: nn.Module | None = field(default=None, repr=False)
    ctx: CompressionContext | None = field(default=None, repr=False)
    layers: list[nn.Module] = field(default_factory=list, repr=False)
    at_step: int | None = None  # resolved freeze point: a step index, or
    at_epoch: int | None = None  # an epoch index
    epochs_started: int = 0  # epoch_step() calls so far
    steps_started: int = 0  # step() calls so far
    frozen_at_step: int | None = None
    frozen_at_epoch: int | None = None

    @property
    def adaptation(self) -> dict[str, Any]:
        return self.params["batch_norm_adaptation"]

    def apply(self, model: nn.Module, ctx: CompressionContext) -> nn.Module:
        if self.adaptation["enabled"]:
            ctx.nncf_dataset("batch_norm_adaptation")  # fail now, not mid-training
        return model

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None:
        self.model, self.ctx = model, ctx
        self.layers = bn_freeze.batch_norms(model, exclude=ctx.reference.modules())
        if not self.layers:
            raise ConfigError("algorithm: frozen_bn found no BatchNorm layers with running statistics in the model")
        self.at_step, self.at_epoch = schedulers.freeze_point(self.params, ctx.epochs, ctx.steps_per_epoch)

    def step(self) -> None:
        if not self.frozen and self.at_step is not None and self._due():
            self._freeze()
        self.steps_started += 1

    def epoch_step(self) -> None:
        self.epochs_started += 1
        if not self.frozen and self.at_epoch is not None and self._due():
            self._freeze()

    def _due(self) -> bool:
        return schedulers.due(self.at_step, self.at_epoch, steps_started=self.steps_started, epochs_started=self.epochs_started)

    def compression_stage(self) -> CompressionStage:
        """Fully compressed once BatchNorm is frozen, as the deployed model runs it; uncompressed before."""
        return CompressionStage.FULLY_COMPRESSED if self.frozen else CompressionStage.UNCOMPRESSED

    @property
    def frozen(self) -> bool:
        return self.frozen_at_step is not None

    def _freeze(self) -> None:
        if self.adaptation["enabled"]:
            nncf.batch_norm_adaptation(self.model, self.ctx.nncf_dataset("batch_norm_adaptation"),
                                       num_iterations=bn_adaptation_iterations(self.adaptation, self.ctx.calibration_data))
        self._freeze_layers()
        self.frozen_at_step = self.steps_started
        self.frozen_at_epoch = self.epochs_started - 1 if self.epochs_started else None

    def _freeze_layers(self) -> None:
        for layer in self.layers:
            bn_freeze.freeze(layer, affine=self.params["freeze_affine"])

    def statistics(self) -> dict[str, Any]:
        return {
            "frozen": self.frozen,
            "frozen_at_step": self.frozen_at_step,
            "frozen_at_epoch": self.frozen_at_epoch,
            "scheduled_at_step": self.at_step,
            "scheduled_at_epoch": self.at_epoch,
            "num_bn_layers": len(self.layers),
            "num_frozen_bn_layers": sum(bn_freeze.is_frozen(m) for m in self.layers),
            "freeze_affine": self.params["freeze_affine"],
        }

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_started": self.epochs_started, "steps_started": self.steps_started,
                "frozen_at_step": self.frozen_at_step, "frozen_at_epoch": self.frozen_at_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.epochs_started, self.steps_started = int(state["epochs_started"]), int(state["steps_started"])
        self.frozen_at_step, self.frozen_at_epoch = state["frozen_at_step"], state["frozen_at_epoch"]
        if self.frozen:
            # The freezing hooks are not part of NNCF's saved hook layout; put them back.
            self._freeze_layers()
        elif self.adaptation["enabled"] and self.ctx.calibration_data is None:
            # Restoring runs outside the entry's error prefix, hence the entry's name in the message.
            raise ConfigError("frozen_bn.batch_norm_adaptation needs calibration_data: "
                              "the restored schedule has not frozen BN yet")

