"""The loss terms of label-preserving distillation, as plain functions of logits.

Every term that compares the student with the teacher is zero when the student's logits equal the
teacher's (``kd``, ``logit_mse``) or, for the label terms, minimal there and pushing the student's
logit of the teacher's top-1 class up (``teacher_ce``, ``margin``). The teacher's logits are taken
as constants: callers pass them detached unless the teacher is trained too (Apprentice scheme A).

Every student-teacher term takes optional per-sample ``weights`` (focal distillation); the loss is
then their weighted mean ``sum(w_i l_i) / sum(w_i)``, so weighting shifts the emphasis between
samples without scaling the loss. Without weights each term is its usual batch mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def label_ce(student: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student against the ground truth, H(y, p_S)."""
    return F.cross_entropy(student, targets)


def _mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    return (weights * values).sum() / weights.sum().clamp_min(1e-12)


def kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hinton's KD: T^2 * KL(p_T^T || p_S^T) on temperature-softened distributions (batch mean).

    KL rather than H(p_T, p_S): same gradient for the student, but zero when the two agree.
    """
    t = temperature
    per_sample = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="none",
                          log_target=True).sum(1)
    return _mean(per_sample, weights) * t * t


def teacher_ce(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's top-1 label: the flip itself as a target."""
    return _mean(F.cross_entropy(student, teacher.detach().argmax(1), reduction="none"), weights)


def margin(student: torch.Tensor, teacher: torch.Tensor, gap: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hinge on the student's lead of the teacher's top-1 class over its strongest other class.

    ``mean(relu(min(gap, lead_T) - lead_S))`` with ``lead = x[top1_T] - max_{j != top1_T} x[j]``:
    zero once every sample's teacher class leads by ``gap`` logits (or by the teacher's own lead,
    if that is smaller, so a student equal to the teacher pays nothing); samples near a flip get
    the gradient and settled ones none.
    """
    teacher = teacher.detach()
    top1 = teacher.argmax(1, keepdim=True)
    return _mean(F.relu(torch.clamp(_lead(teacher, top1), max=gap) - _lead(student, top1)), weights)


def _lead(logits: torch.Tensor, top1: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, top1).squeeze(1) - logits.scatter(1, top1, float("-inf")).amax(1)


def logit_mse(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference of the raw logits (logit matching)."""
    return _mean(F.mse_loss(student, teacher, reduction="none").mean(1), weights)


def focal_weights(teacher: torch.Tensor, targets: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Positive-Congruent Training's focal distillation weights (Yan et al., CVPR 2021): ``alpha + beta``
    on the samples the reference classifies correctly, ``alpha`` elsewhere, so the student is held hardest
    to the reference where a flip would cost accuracy."""
    return alpha + beta * (teacher.detach().argmax(1) == targets).float()


def mix_inputs(x: torch.Tensor, mode: str, fraction: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Replaces the last ``round(fraction * B)`` rows of the batch by mixes of two of its images.

    ``mixup``: ``lam * x_i + (1 - lam) * x_j``; ``cutmix``: ``x_i`` with a box of ``x_j`` pasted in
    (area ``1 - lam``), ``lam ~ Beta(alpha, alpha)`` per batch, ``j`` a permutation of the batch. No
    labels are made: the mixed rows only serve the teacher-student terms (Stanton et al., NeurIPS 2021:
    such inputs raise teacher-student agreement). Returns the batch and a bool mask of its unmixed rows.
    Draws from torch's global RNG, which the trainer seeds and checkpoints (a resumed run mixes the same).
    """
    n = x.shape[0]
    k = min(n, round(fraction * n))
    clean = torch.ones(n, dtype=torch.bool, device=x.device)
    if k == 0 or mode == "none":
        return x, clean
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(n)[:k].to(x.device)
    rows = torch.arange(n - k, n, device=x.device)
    out = x.clone()
    if mode == "mixup":
        out[rows] = lam * x[rows] + (1 - lam) * x[partner]
    else:
        h, w = x.shape[-2:]
        ch, cw = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
        top = int(torch.randint(0, h - ch + 1, (1,)))
        left = int(torch.randint(0, w - cw + 1, (1,)))
        out[rows, :, top:top + ch, left:left + cw] = x[partner][:, :, top:top + ch, left:left + cw]
    clean[rows] = False
    return out, clean


def boundary_inputs(x: torch.Tensor, teacher: torch.nn.Module, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Replaces the last ``round(fraction * B)`` rows by images moved toward the teacher's decision boundary.

    Boundary-supporting samples (Heo et al., AAAI 2019): each row takes one linearised (DeepFool) step
    from its teacher's top-1 class ``b`` toward its runner-up ``r``, ``x - f * d / |g|^2 * g`` with
    ``d = z_b - z_r`` and ``g`` its input gradient, ``f ~ U(0, 1)`` per row, so the teacher's lead on the
    moved images spreads from its original size down to about zero. Flips live at small leads, and
    these are the inputs where the student must match the teacher's logits to keep its labels. No
    labels are made; returns the batch and a bool mask of its unmoved rows. One forward and backward
    of the teacher on the moved rows (its parameters get no gradient). Draws ``f`` from torch's global RNG.
    """
    n = x.shape[0]
    k = min(n, round(fraction * n))
    clean = torch.ones(n, dtype=torch.bool, device=x.device)
    if k == 0:
        return x, clean
    rows = torch.arange(n - k, n, device=x.device)
    with torch.enable_grad():
        moved = x[rows].detach().clone().requires_grad_(True)
        top2 = teacher(moved).topk(2, dim=1)
        lead = top2.values[:, 0] - top2.values[:, 1]
        (grad,) = torch.autograd.grad(lead.sum(), moved)
    norm2 = grad.flatten(1).pow(2).sum(1).clamp_min(1e-12)
    f = torch.rand(k, device=x.device)
    step = (f * lead.detach() / norm2).view(-1, *([1] * (x.dim() - 1)))
    out = x.clone()
    out[rows] = (moved - step * grad).detach()
    clean[rows] = False
    return out, clean
