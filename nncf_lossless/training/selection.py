"""Which epoch's weights a run ends with (``training.select_checkpoint``).

``last`` keeps the final epoch. ``fewest_mismatches`` keeps the epoch with the fewest mismatches
(IR-measured when the record has ``ir_mismatches``; compressed accuracy breaks ties), scored on the
records the trainer gives it, which must come from the validation split (``"split": "validation"``):
a record scored on the test split is refused, so the reported test numbers are never selected ones.
As in NNCF 2's samples, only fully compressed epochs are candidates (a record with
``"fully_compressed": false``, e.g. an epoch before a pruning schedule reaches its ratio, is passed
over): the kept weights are always compressed as the config asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class CheckpointSelection:
    mode: str = "last"
    best: dict[str, Any] | None = None  # {"epoch", "score"} of the epoch kept so far

    @staticmethod
    def score(record: dict[str, Any]) -> list[float]:
        """Lower is better: mismatches, then minus accuracy (IR numbers where the record has them)."""
        return [record.get("ir_mismatches", record["mismatches"]),
                -record.get("ir_compressed_accuracy", record["compressed_accuracy"])]

    def offer(self, record: dict[str, Any]) -> bool:
        """Considers an epoch's record; True if its weights become the ones to keep (save them)."""
        if self.mode != "fewest_mismatches":
            return False
        if record.get("split") != "validation":
            raise ValueError(f"checkpoint selection scores the validation split only, got a record of {record.get('split')!r}")
        if not record.get("fully_compressed", True):
            return False
        score = self.score(record)
        if self.best is not None and score >= self.best["score"]:
            return False
        self.best = {"epoch": record["epoch"], "score": score}
        return True

    def selected_epoch(self, epochs_run: int) -> int:
        return self.best["epoch"] if self.best else epochs_run
