"""``ctrl.scheduler``: one object that advances every algorithm's schedule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nncf_lossless.algorithm import Algorithm


@dataclass
class CompressionScheduler:
    """NNCF 2's scheduler interface: ``epoch_step()`` at each epoch start, ``step()`` before each batch.

    ``epoch`` counts the ``epoch_step`` calls, ``current_step`` the ``step`` calls, so each is the
    0-based index of the next epoch / step to start; both are saved in ``ctrl.state_dict()``
    together with each algorithm's own schedule state.

    As in NNCF 2, ``epoch_step(next_epoch)`` and ``step(next_step)`` may name the index that
    starts. Every algorithm's schedule counts the epochs (steps) it has seen, so naming a later
    index fast-forwards it through the skipped ones (a pruning schedule sets the ratio due by
    then, frozen_bn freezes if its point was passed); an index already started raises
    ``ValueError``, since schedules do not run backwards.
    """

    algorithms: Sequence[Algorithm]
    epoch: int = 0
    current_step: int = 0

    def step(self, next_step: int | None = None) -> None:
        for _ in range(_calls("step", next_step, self.current_step)):
            for algo in self.algorithms:
                algo.step()
            self.current_step += 1

    def epoch_step(self, next_epoch: int | None = None) -> None:
        for _ in range(_calls("epoch_step", next_epoch, self.epoch)):
            for algo in self.algorithms:
                algo.epoch_step()
            self.epoch += 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "current_step": self.current_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.current_step = int(state["current_step"])


def _calls(method: str, index: int | None, next_index: int) -> int:
    """How many single advances bring the schedule to the start of ``index``."""
    if index is None:
        return 1
    if index < next_index:
        raise ValueError(f"ctrl.scheduler.{method}({index}): index {next_index - 1} has already started; "
                         "schedules do not run backwards (restore a checkpoint to go back)")
    return index - next_index + 1
