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
import torch
from torch import nn

from nncf_lossless import registry
from nncf_lossless.algorithm import CompressionContext
from nncf_lossless.algorithms.frozen_bn import modules as bn_freeze
from nncf_lossless.algorithms.shared_params import BN_ADAPTATION_SCHEMA
from nncf_lossless.errors import ConfigError

DEFAULT_FRACTION = 0.5
_POINTS = ("at_epoch", "at_step", "at_fraction")

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["algorithm"],
    "properties": {
        "algorithm": {"const": "frozen_bn"},
        # At most one of these; none means at_fraction 0.5 (no schema default, so one can be given).
        "at_epoch": {"type": "integer", "minimum": 0},
        "at_step": {"type": "integer", "minimum": 0},
        "at_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "freeze_affine": {"type": "boolean", "default": False},
        "batch_norm_adaptation": BN_ADAPTATION_SCHEMA,
    },
}


@dataclass
class FrozenBN:
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

    def __post_init__(self) -> None:
        given = [k for k in _POINTS if k in self.params]
        if len(given) > 1:
            raise ConfigError(f"{given[1]}: give only one of {', '.join(_POINTS)} (also given: {given[0]})")

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
        if "at_epoch" in self.params:
            self.at_epoch = self.params["at_epoch"]
        elif "at_step" in self.params:
            self.at_step = self.params["at_step"]
        else:
            fraction = self.params.get("at_fraction", DEFAULT_FRACTION)
            if ctx.epochs is None or ctx.steps_per_epoch is None:
                raise ConfigError(f"at_fraction: {fraction} of the planned training needs epochs and steps_per_epoch "
                                  "passed to create_compressed_model; or give at_epoch or at_step")
            self.at_step = int(fraction * ctx.epochs * ctx.steps_per_epoch + 0.5)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor | None, inputs: torch.Tensor | None) -> None:
        return None

    def step(self) -> None:
        if self.at_step is not None and self.steps_started >= self.at_step and not self.frozen:
            self._freeze()
        self.steps_started += 1

    def epoch_step(self) -> None:
        self.epochs_started += 1
        if self.at_epoch is not None and self.epochs_started - 1 >= self.at_epoch and not self.frozen:
            self._freeze()

    @property
    def frozen(self) -> bool:
        return self.frozen_at_step is not None

    def _freeze(self) -> None:
        if self.adaptation["enabled"]:
            nncf.batch_norm_adaptation(self.model, self.ctx.nncf_dataset("batch_norm_adaptation"),
                                       num_iterations=self.adaptation["num_iterations"])
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


registry.register(registry.Entry("frozen_bn", SCHEMA, FrozenBN, stage=30))
