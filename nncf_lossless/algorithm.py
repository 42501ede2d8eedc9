"""What the controller expects of every compression algorithm.

An algorithm is built by its registry entry from validated config parameters. The controller
calls, in this order:

1. ``apply(model, ctx)`` once, on a fresh model, to insert NNCF's modules (skipped on restore,
   where ``nncf.torch.load_from_config`` re-inserts them from the checkpoint);
2. ``attach(model, ctx)`` on both paths, to bind schedules and losses to the model's modules;
3. ``load_state_dict`` on restore;

then, during training, ``loss`` once per batch, ``step`` before each batch and ``epoch_step``
at the start of each epoch (NNCF 2's convention), and ``statistics`` / ``state_dict`` whenever
asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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


class Algorithm(Protocol):
    name: str

    def apply(self, model: nn.Module, ctx: CompressionContext) -> nn.Module: ...

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None: ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor | None, inputs: torch.Tensor | None) -> torch.Tensor | None:
        """Extra loss terms of this algorithm, or ``None`` if it adds none."""
        ...

    def step(self) -> None: ...

    def epoch_step(self) -> None: ...

    def statistics(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def batch_inputs(batch: Any) -> torch.Tensor:
    """The model input of a batch: the batch itself, or the first item of an ``(x, y, ...)`` batch."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch
