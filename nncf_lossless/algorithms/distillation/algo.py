"""The ``label_preserving_distillation`` entry: distil the compressed model from its FP32 reference.

The teacher is the controller's frozen reference (``ctx.reference``). Its output on each batch's
inputs enters a weighted sum of terms (:mod:`~nncf_lossless.algorithms.distillation.losses`)::

    loss = label_ce * H(y, p_S) + kd * T^2 KL(p_T^T || p_S^T) + teacher_ce * H(argmax p_T, p_S)
           + margin * hinge(lead of argmax p_T) + mse * |z_S - z_T|^2 [+ teacher * H(y, p_T)]

This entry **owns the task loss** (``owns_task_loss``): with it, ``ctrl.loss(out, y, x)`` is the
whole training loss, ground-truth CE included as the ``label_ce`` term, and the trainer (or a
custom loop) must not add its own cross-entropy.

``scheme`` follows Apprentice (Mishra & Marr, 2018):

* ``C`` (default): the student starts from the trained FP32 weights (plain QAT/pruning start);
  the teacher is fixed (no_grad).
* ``B``: the student's weights are re-initialised before calibration (this entry's ``stage`` is
  lower than pruning's and quantization's so that happens first), then trained against a fixed
  teacher.
* ``A``: the teacher is trained jointly, with its own CE weight ``weights.teacher``. It still
  stays in eval mode (its BatchNorm statistics do not move) but gets gradients; its parameters
  are offered to the optimizer through ``trainable_parameters()``. The reference the run measures
  mismatches against and exports is then the teacher *as it ends up*.

The teacher is never put in train mode. ``teacher_cache`` keeps teacher logits keyed by a hash of
each input sample's bytes, so it is correct for any loader order and never stale: an augmented
sample simply misses. Hits and misses are in ``statistics()``. The cache is not checkpointed (it
rebuilds in one epoch) and is refused with scheme A, whose teacher changes.

Flip-first options (issue 15), all off by default:

* ``targets: "teacher"``: the loss never reads the ground truth (``label_ce`` must be 0; its default
  becomes 0), so the student is never pushed away from the reference where the reference is wrong.
  Pure KD at a low temperature, logit matching (``mse``) and teacher-label CE (``teacher_ce``) are
  the ``weights``.
* ``focal: {alpha, beta}``: every student-teacher term is a weighted mean with weight ``alpha + beta``
  on the samples the reference classifies correctly and ``alpha`` elsewhere (Positive-Congruent
  Training's focal distillation; it reads the labels only to weight). ``beta: 0`` (default) is off.
* ``mix: {mode, fraction, alpha}``: ``mixup``/``cutmix`` replaces ``fraction`` of each training batch
  by mixes of its images, before the student's forward pass (``prepare_inputs``, which the built-in
  loop calls); only the teacher-student terms see them, so ``label_ce`` must be 0. ``boundary``
  instead moves those rows toward the teacher's decision boundary (boundary-supporting samples,
  :func:`~nncf_lossless.algorithms.distillation.losses.boundary_inputs`); ``alpha`` is unused there.

After each ``loss``, ``last_teacher_logits`` and ``last_clean_rows`` (unmixed rows) are kept for the
flip-focused sampler, which counts disagreements on them.

``weights: "auto"`` is resolved before compression by :func:`nncf_lossless.training.tuning.tune` (the
built-in trainer does this); an unresolved ``"auto"`` reaching :meth:`apply` is an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncf_lossless.algorithm import AlgorithmBase, CompressionContext
from nncf_lossless.algorithms.distillation import losses as L
from nncf_lossless.algorithms.distillation.schema import DEFAULT_WEIGHTS, NAME, SCHEMA, TERMS, check, effective_weights  # noqa: F401
from nncf_lossless.errors import ConfigError

LABEL_TERMS = ("label_ce", "teacher")


@dataclass
class Distillation(AlgorithmBase):
    params: dict[str, Any]
    name: str = NAME
    owns_task_loss: bool = True
    teacher: nn.Module | None = field(default=None, repr=False)
    latest: dict[str, float] = field(default_factory=dict)
    cache: dict[bytes, torch.Tensor] = field(default_factory=dict, repr=False)
    hits: int = 0
    misses: int = 0
    last_teacher_logits: torch.Tensor | None = field(default=None, repr=False)
    last_clean_rows: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check(self.params)
        if isinstance(self.params.get("weights"), dict):
            self.weights = effective_weights(self.params)

    def apply(self, model: nn.Module, ctx: CompressionContext) -> nn.Module:
        if self.params["weights"] == "auto":
            raise ConfigError('weights: "auto" must be resolved first (nncf_lossless.training.tuning.tune; the trainer does it)')
        if self.params["scheme"] == "B":
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return model

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None:
        self.teacher = ctx.reference
        self.teacher.eval()
        self.teacher.requires_grad_(self.params["scheme"] == "A")

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The teacher's parameters under scheme A (trained jointly), else none."""
        return list(self.teacher.parameters()) if self.params["scheme"] == "A" and self.teacher is not None else []

    def teacher_view(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.last_teacher_logits, self.last_clean_rows

    def prepare_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The training batch the student runs on: ``mix`` applied (a no-op without it)."""
        mix = self.params["mix"]
        if mix["mode"] == "none":
            self.last_clean_rows = None
            return inputs
        if mix["mode"] == "boundary":
            inputs, self.last_clean_rows = L.boundary_inputs(inputs, self.teacher, mix["fraction"])
        else:
            inputs, self.last_clean_rows = L.mix_inputs(inputs, mix["mode"], mix["fraction"], mix["alpha"])
        return inputs

    def loss(self, outputs: torch.Tensor | None, targets: torch.Tensor | None,
             inputs: torch.Tensor | None) -> torch.Tensor | None:
        """The weighted terms; without ``targets`` (NNCF 2's ``ctrl.loss()``) those on the labels, and the
        focal weighting (which reads them), are left out."""
        if outputs is None:
            return None  # no forward yet
        if inputs is None:
            raise ValueError(f"{NAME}: ctrl.loss(outputs, targets, inputs) needs the batch's inputs for the teacher")
        w, p = self.weights, self.params
        teacher = self._teacher_logits(inputs)
        self.last_teacher_logits = teacher.detach()
        sw = self._focal_weights(teacher, targets, len(outputs)) if targets is not None else None
        terms = {
            "label_ce": lambda: L.label_ce(outputs, targets),
            "kd": lambda: L.kd(outputs, teacher, p["temperature"], sw),
            "teacher_ce": lambda: L.teacher_ce(outputs, teacher, sw),
            "margin": lambda: L.margin(outputs, teacher, p["margin_gap"], sw),
            "mse": lambda: L.logit_mse(outputs, teacher, sw),
        }
        if p["scheme"] == "A":
            terms["teacher"] = lambda: L.label_ce(teacher, targets)
        if targets is None:
            terms = {t: fn for t, fn in terms.items() if t not in LABEL_TERMS}
        total = torch.zeros((), device=outputs.device)
        self.latest = {}
        for term, fn in terms.items():
            if w[term]:
                value = fn()
                self.latest[term] = value.item()
                total = total + w[term] * value
        self.latest["total"] = total.item()
        return total

    def _focal_weights(self, teacher: torch.Tensor, targets: torch.Tensor | None, n: int) -> torch.Tensor | None:
        focal = self.params["focal"]
        if not focal["beta"] and focal["alpha"] == 1.0:
            return None
        weights = L.focal_weights(teacher, targets, focal["alpha"], focal["beta"])
        clean = self.last_clean_rows
        if clean is not None and len(clean) == n:  # a mixed image has no label to be right about
            weights = torch.where(clean.to(weights.device), weights, torch.full_like(weights, focal["alpha"]))
        return weights

    def _teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.teacher.training:  # a user's model.train() on a parent module must not reach the teacher
            self.teacher.eval()
        if self.params["scheme"] == "A":
            return self.teacher(inputs)
        if not self.params["teacher_cache"]:
            with torch.no_grad():
                return self.teacher(inputs)
        keys = [hashlib.blake2b(x.numpy().tobytes(), digest_size=16).digest() for x in inputs.detach().cpu()]
        found = [self.cache.get(k) for k in keys]
        if all(f is not None for f in found):
            self.hits += len(keys)
            return torch.stack(found).to(inputs.device)
        self.misses += len(keys)
        with torch.no_grad():
            logits = self.teacher(inputs)
        for k, row in zip(keys, logits.cpu()):
            self.cache[k] = row
        return logits

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"scheme": self.params["scheme"], "temperature": self.params["temperature"],
                                 "targets": self.params["targets"],
                                 "weights": getattr(self, "weights", self.params["weights"]), "terms": dict(self.latest)}
        if self.params["teacher_cache"]:
            looked_up = self.hits + self.misses
            stats["teacher_cache"] = {"entries": len(self.cache), "hit_rate": self.hits / looked_up if looked_up else 0.0}
        return stats
