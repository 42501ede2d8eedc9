"""The ``logit_l2`` algorithm: imported only when a model is compressed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncf_lossless.algorithm import AlgorithmBase, CompressionContext


@dataclass
class LogitL2(AlgorithmBase):
    params: dict[str, Any]
    name: str = "logit_l2"
    reference: nn.Module | None = field(default=None, repr=False)
    epochs_started: int = 0
    terms: int = 0

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None:
        self.reference = ctx.reference  # frozen, eval mode: the controller keeps it so

    def loss(self, outputs: torch.Tensor | None, targets: torch.Tensor | None,
             inputs: torch.Tensor | None) -> torch.Tensor | None:
        until = self.params["until_epoch"]
        if outputs is None or inputs is None or (until is not None and self.epochs_started > until):
            return None
        with torch.no_grad():
            reference = self.reference(inputs)
        self.terms += 1
        return self.params["weight"] * F.mse_loss(outputs, reference)

    def epoch_step(self) -> None:
        self.epochs_started += 1

    def statistics(self) -> dict[str, Any]:
        return {"weight": self.params["weight"], "terms_added": self.terms}

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_started": self.epochs_started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_started = int(state.get("epochs_started", 0))
