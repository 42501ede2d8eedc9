"""``ctrl.scheduler``: one object that advances every algorithm's schedule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nncf_lossless.algorithm import Algorithm


@dataclass
class CompressionScheduler:
    """NNCF 2's scheduler interface: ``epoch_step()`` at each epoch start, ``step()`` before each batch.

    ``epoch`` counts the ``epoch_step`` calls, ``current_step`` the ``step`` calls; both are saved
    in ``ctrl.state_dict()`` together with each algorithm's own schedule state.
    """

    algorithms: Sequence[Algorithm]
    epoch: int = 0
    current_step: int = 0

    def step(self) -> None:
        for algo in self.algorithms:
            algo.step()
        self.current_step += 1

    def epoch_step(self) -> None:
        for algo in self.algorithms:
            algo.epoch_step()
        self.epoch += 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "current_step": self.current_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.current_step = int(state["current_step"])
