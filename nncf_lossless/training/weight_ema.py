"""Exponential moving average of the fine-tuned weights (``training.ema_decay``).

Each optimizer step moves every trained parameter of the compressed model (quantizer scales
included) into a shadow copy: ``shadow = decay * shadow + (1 - decay) * weight``, with torch's own
EMA update (``torch.optim.swa_utils.get_ema_multi_avg_fn``). Buffers are not averaged, as in torch's
``AveragedModel(use_buffers=False)``: BatchNorm's running statistics are moving averages already, and
under DDP each rank updates them from its own shard after the last broadcast, so averaging them would
give every rank a different model. Evaluation, checkpoint selection and export see the averages;
training keeps stepping the raw weights. The average smooths the last steps' noise, which moves
near-tie samples across the decision boundary.

Contract: ``update()`` after every optimizer step; ``with ema.swapped():`` the model holds the
averages inside the block and its own weights again after it; ``copy_to_model()`` leaves the
averages in for good. ``state_dict``/``load_state_dict`` make a resumed run bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = model
        # Trained parameters only: a frozen one (a quantizer's ``_num_bits``, which multi_bit switches) must
        # never be blended.
        self.shadow = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad and v.is_floating_point()}
        self._update = get_ema_multi_avg_fn(decay)
        self._steps = 0

    def _live(self) -> dict[str, torch.Tensor]:
        """The averaged parameters as the model holds them now (looked up each time: a module may replace one)."""
        return {k: v for k, v in self.model.named_parameters() if k in self.shadow}

    @torch.no_grad()
    def update(self) -> None:
        live = self._live()
        keys = list(self.shadow)
        self._update([self.shadow[k] for k in keys], [live[k].detach() for k in keys], self._steps)
        self._steps += 1

    @torch.no_grad()
    def _exchange(self) -> None:
        for k, tensor in self._live().items():
            held = tensor.detach().clone()
            tensor.data.copy_(self.shadow[k])
            self.shadow[k] = held

    @contextmanager
    def swapped(self) -> Iterator[None]:
        self._exchange()
        try:
            yield
        finally:
            self._exchange()

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for k, tensor in self._live().items():
            tensor.data.copy_(self.shadow[k])

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "steps": self._steps, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, object]) -> None:
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):  # type: ignore[arg-type]
            raise ValueError("the checkpoint's weight averages are for another model")
        self.shadow = {k: v.clone() for k, v in shadow.items()}  # type: ignore[union-attr]
        self._steps = int(state["steps"])  # type: ignore[arg-type]
