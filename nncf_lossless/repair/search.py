"""The search: rank quantizer groups by what reverting each alone does, revert greedily, prune.

Pure logic over an ``evaluate(indices) -> Evaluation`` callback, so it is independent of
OpenVINO. It follows NNCF's accuracy control (rank groups by their effect on a per-sample
metric, revert in rank order until the drop budget holds) with label agreement as the metric:
the rank is the validation mismatch count with that group alone in float, ties broken by NNCF's
normalized MSE of the logits. NNCF re-ranks when a step makes things worse; here every group is
ranked once and a final pass puts back (re-quantizes) each reverted group that the budget does
not need, least useful first, so the result is a minimal set for the greedy order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Evaluation:
    """One candidate on the validation set: which samples disagree with the reference, and how fast."""

    mismatch_ids: tuple[int, ...]
    nmse: float
    images_per_second: float | None = None

    @property
    def mismatches(self) -> int:
        return len(self.mismatch_ids)


@dataclass
class SearchResult:
    reverted: list[int]  # group indices, in the order they were reverted
    before: Evaluation
    after: Evaluation
    budget_met: bool
    ranking: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    pruned: list[int] = field(default_factory=list)


def label_agreement(reference_logits: np.ndarray) -> Callable[[np.ndarray], tuple[float, list[float]]]:
    """NNCF's per-sample validation contract: ``logits -> (metric, per-sample values)``.

    The per-sample value is 1.0 where the top-1 label equals the reference's, else 0.0; the
    metric is their mean, so a budget of ``N`` mismatches is an absolute drop of ``N / len``.
    """
    ref_labels = np.asarray(reference_logits).argmax(1)

    def validate(logits: np.ndarray) -> tuple[float, list[float]]:
        agree = (np.asarray(logits).argmax(1) == ref_labels).astype(np.float64)
        return float(agree.mean()) if agree.size else 1.0, agree.tolist()

    return validate


def nmse(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    """NNCF's ranking score (normalized MSE of the outputs), averaged over samples."""
    from nncf.quantization.algorithms.accuracy_control.rank_functions import normalized_mse

    return float(normalized_mse([np.asarray(reference_logits)], [np.asarray(logits)]))


def search(
    num_groups: int,
    evaluate: Callable[[Sequence[int]], Evaluation],
    max_mismatches: int,
    *,
    prune: bool = True,
    rank: Callable[[int], Evaluation] | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> SearchResult:
    """The fewest groups (greedy in rank order, then pruned) with at most ``max_mismatches`` validation mismatches.

    If even every group in float exceeds the budget, all groups are reverted and ``budget_met`` is False.
    ``rank(g)`` scores group ``g`` alone in float (default ``evaluate([g])``; NNCF ranks on a subset of
    the validation set). ``progress(title, total)`` (the checker's progress-bar factory) returns a
    callback advanced per evaluation.
    """
    def bar(title: str, total: int) -> Callable[[int], None]:
        return progress(title, total) if progress else (lambda _: None)

    before = evaluate([])
    result = SearchResult(reverted=[], before=before, after=before, budget_met=before.mismatches <= max_mismatches)
    result.steps.append(_step([], before))
    if result.budget_met or num_groups == 0:
        return result

    advance = bar(f"ranking {num_groups} quantizer groups, each alone in float", num_groups)
    alone = []
    for g in range(num_groups):
        alone.append(rank(g) if rank else evaluate([g]))
        advance(1)
    order = sorted(range(num_groups), key=lambda g: (alone[g].mismatches, alone[g].nmse, g))
    result.ranking = [{"group": g, "mismatches_alone": alone[g].mismatches, "nmse_alone": alone[g].nmse} for g in order]

    advance = bar(f"reverting in rank order until <= {max_mismatches} mismatches", num_groups)
    current = before
    for g in order:
        chosen = result.reverted + [g]
        current = evaluate(chosen)
        advance(1)
        result.reverted = chosen
        result.steps.append(_step(chosen, current))
        if current.mismatches <= max_mismatches:
            result.budget_met = True
            break
    result.after = current

    # Without the last group is the previous step, cached; the others cost one evaluation each.
    if prune and result.budget_met and len(result.reverted) > 1:
        advance = bar("putting back the reverts the budget does not need", len(result.reverted))
        for g in reversed(result.reverted):
            trial = [x for x in result.reverted if x != g]
            evaluation = evaluate(trial)
            advance(1)
            if evaluation.mismatches <= max_mismatches:
                result.reverted, result.after = trial, evaluation
                result.pruned.append(g)
                result.steps.append({**_step(trial, evaluation), "pruned": g})
    return result


def _step(reverted: Sequence[int], evaluation: Evaluation) -> dict[str, Any]:
    return {"reverted_groups": list(reverted), "validation_mismatches": evaluation.mismatches,
            "nmse": evaluation.nmse, "images_per_second": evaluation.images_per_second}
