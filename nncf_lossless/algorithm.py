"""What the controller expects of every compression algorithm.

An algorithm is built by its registry entry from validated config parameters. The controller
calls, in this order:

1. ``apply(model, ctx)`` once, on a fresh model, to insert NNCF's modules (skipped on restore,
   where ``nncf.torch.load_from_config`` re-inserts them from the checkpoint);
2. ``attach(model, ctx)`` on both paths, to bind schedules and losses to the model's modules;
3. ``load_state_dict`` on restore;

then, during training, ``loss`` once per batch, ``step`` before each batch and ``epoch_step``
at the start of each epoch (NNCF 2's convention), and ``statistics`` / ``state_dict`` /
``compression_stage`` whenever asked. It also reads ``owns_task_loss``, ``exclusive`` and
``trainable_parameters()``. :class:`Algorithm` lists every one of these hooks; a plugin
subclasses :class:`AlgorithmBase`, which gives each a neutral default, and overrides what it needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import nncf
import torch
from torch import nn

from nncf_lossless.errors import ConfigError


@dataclass
class CompressionContext:
    """What algorithms may use besides the model.

    ``calibration_data`` yields batches (a tensor, or a tuple/list whose first item is the input);
    it is ``None`` when the model is restored from a checkpoint. ``reference`` is the frozen FP32
    model the compressed one must agree with. ``epochs`` and ``steps_per_epoch`` describe the
    planned training, for schedules stated as fractions of it (``None`` if unknown). ``entries`` are
    the config's validated compression entries, for an entry that works with others (multi_bit).
    """

    example_input: torch.Tensor
    reference: nn.Module
    calibration_data: Iterable[Any] | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    entries: tuple[dict[str, Any], ...] = ()

    def nncf_dataset(self, what: str) -> nncf.Dataset:
        """The calibration data as an ``nncf.Dataset`` of model inputs on the model's device."""
        if self.calibration_data is None:
            raise ConfigError(f"{what} needs calibration_data")
        return nncf.Dataset(self.calibration_data, self.inputs_of)

    def inputs_of(self, batch: Any) -> torch.Tensor:
        return batch_inputs(batch).to(self.example_input.device)


class CompressionStage(IntEnum):
    """NNCF 2's ``CompressionStage``: how far the schedules have brought the compression."""

    UNCOMPRESSED = 0
    PARTIALLY_COMPRESSED = 1
    FULLY_COMPRESSED = 2


class Algorithm(Protocol):
    """Every hook the controller and the trainer use. Build one with a registry entry."""

    name: str
    #: ``loss()`` is the whole training loss (it includes the task loss), e.g. distillation.
    owns_task_loss: bool
    #: True while this algorithm's loss alone is the training loss (every other term is dropped).
    exclusive: bool

    def apply(self, model: nn.Module, ctx: CompressionContext) -> nn.Module: ...

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None: ...

    def loss(self, outputs: torch.Tensor | None, targets: torch.Tensor | None,
             inputs: torch.Tensor | None) -> torch.Tensor | None:
        """Extra loss terms of this algorithm, or ``None`` if it adds none.

        ``outputs``/``inputs`` are the last forward's when the caller gave none (NNCF 2's
        ``ctrl.loss()``), ``None`` before any forward; ``targets`` may be ``None``: terms that
        need them are then left out (the caller adds the task loss, as in NNCF 2).
        """
        ...

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the model the optimizer must train (adapters, a jointly trained teacher)."""
        ...

    def prepare_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The training batch the student runs on (e.g. mixup for distillation only); the identity by default."""
        ...

    def teacher_view(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The teacher logits of the last ``loss`` call and which of its rows are unmixed dataset images
        (``(None, None)`` if this algorithm runs no teacher); the flip-focused sampler reads them."""
        ...

    def step(self) -> None: ...

    def epoch_step(self) -> None: ...

    def compression_stage(self) -> CompressionStage: ...

    def statistics(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class AlgorithmBase:
    """Neutral defaults for every :class:`Algorithm` hook: no model change, no loss, no schedule, no state.

    Plain class attributes, so a dataclass subclass may redeclare any of them as a field.
    """

    name: str = "algorithm"
    owns_task_loss: bool = False
    exclusive: bool = False

    def apply(self, model: nn.Module, ctx: CompressionContext) -> nn.Module:
        return model

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None:
        pass

    def loss(self, outputs: torch.Tensor | None, targets: torch.Tensor | None,
             inputs: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return []

    def prepare_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs

    def teacher_view(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return None, None

    def step(self) -> None:
        pass

    def epoch_step(self) -> None:
        pass

    def compression_stage(self) -> CompressionStage:
        """Default: fully compressed once applied (nothing scheduled holds the compression back)."""
        return CompressionStage.FULLY_COMPRESSED

    def statistics(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def batch_inputs(batch: Any) -> torch.Tensor:
    """The model input of a batch: the batch itself, or the first item of an ``(x, y, ...)`` batch."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch
