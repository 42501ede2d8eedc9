"""The loss terms of label-preserving distillation, as plain functions of logits.

Every term that compares the student with the teacher is zero when the student's logits equal the
teacher's (``kd``, ``logit_mse``) or, for the label terms, minimal there and pushing the student's
logit of the teacher's top-1 class up (``teacher_ce``, ``margin``). The teacher's logits are taken
as constants: callers pass them detached unless the teacher is trained too (Apprentice scheme A).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_ce(student: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student against the ground truth, H(y, p_S)."""
    return F.cross_entropy(student, targets)


def kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's KD: T^2 * KL(p_T^T || p_S^T) on temperature-softened distributions (batch mean).

    KL rather than H(p_T, p_S): same gradient for the student, but zero when the two agree.
    """
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean",
                    log_target=True) * t * t


def teacher_ce(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's top-1 label: the flip itself as a target."""
    return F.cross_entropy(student, teacher.detach().argmax(1))


def margin(student: torch.Tensor, teacher: torch.Tensor, gap: float) -> torch.Tensor:
    """Hinge on the student's lead of the teacher's top-1 class over its strongest other class.

    ``mean(relu(min(gap, lead_T) - lead_S))`` with ``lead = x[top1_T] - max_{j != top1_T} x[j]``:
    zero once every sample's teacher class leads by ``gap`` logits (or by the teacher's own lead,
    if that is smaller, so a student equal to the teacher pays nothing); samples near a flip get
    the gradient and settled ones none.
    """
    teacher = teacher.detach()
    top1 = teacher.argmax(1, keepdim=True)
    return F.relu(torch.clamp(_lead(teacher, top1), max=gap) - _lead(student, top1)).mean()


def _lead(logits: torch.Tensor, top1: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, top1).squeeze(1) - logits.scatter(1, top1, float("-inf")).amax(1)


def logit_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the raw logits (logit matching)."""
    return F.mse_loss(student, teacher)
