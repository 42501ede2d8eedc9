"""Teacher selection and the per-bit-width loss of multi-bit training, as plain functions of logits.

Adaptive teacher selection (this project's rule; see the entry's docstring for what the paper
says and what it does not): for a student at ``b`` bits and each sample, the teacher is the
*lowest* bit-width above ``b`` trained in the same step whose top-1 class on that sample is the
FP32 reference's; if none agrees, the FP32 reference itself. The nearest precision is the
easiest to imitate (the capacity-gap argument of teacher-assistant KD, Mirzadeh et al. 2020),
and a teacher that already lost the reference's label is never imitated, which is what label
preservation asks. ``"reference"`` (always FP32) and ``"next_higher"`` (always the next higher
bit-width) are the ablations.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from nncf_lossless.algorithms.distillation import losses as L

FP32 = 32  # the reference's "bit-width" in teacher counts
RULES = ("adaptive", "reference", "next_higher")


def select_teacher(rule: str, higher: Mapping[int, torch.Tensor], reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample teacher logits and the bit-width each came from (:data:`FP32` for the reference).

    ``higher``: detached logits of the bit-widths above the student trained this step.
    """
    teacher, chosen = reference.detach().clone(), torch.full((len(reference),), FP32, dtype=torch.long,
                                                              device=reference.device)
    if rule == "reference" or not higher:
        return teacher, chosen
    if rule == "next_higher":
        b = min(higher)
        return higher[b].detach(), torch.full_like(chosen, b)
    ref_top = reference.argmax(1)
    for b in sorted(higher, reverse=True):  # highest first: the nearest agreeing bit-width writes last
        ok = higher[b].argmax(1) == ref_top
        teacher[ok] = higher[b].detach()[ok]
        chosen[ok] = b
    return teacher, chosen


def weighted_terms(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, weights: Mapping[str, float],
                   temperature: float, margin_gap: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The label-preserving distillation sum (the ``label_preserving_distillation`` terms) against ``teacher``."""
    terms = {
        "label_ce": lambda: L.label_ce(student, targets),
        "kd": lambda: L.kd(student, teacher, temperature),
        "teacher_ce": lambda: L.teacher_ce(student, teacher),
        "margin": lambda: L.margin(student, teacher, margin_gap),
        "mse": lambda: L.logit_mse(student, teacher),
    }
    total = torch.zeros((), device=student.device)
    values = {}
    for name, fn in terms.items():
        if weights.get(name):
            value = fn()
            values[name] = value.item()
            total = total + weights[name] * value
    return total, values
