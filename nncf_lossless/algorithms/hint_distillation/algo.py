"""The ``hint_distillation`` entry: FitNets-style hints from the FP32 reference at chosen layers.

At each hint point the student's layer output (as the compressed model computes it, quantized
where NNCF quantizes it) is matched to the teacher's (``ctx.reference``, frozen, eval mode) with a
mean squared error, averaged over points and scaled by ``weight``. Hint points are:

* ``"auto"`` (default): the teacher's candidate layers clustered by representational similarity
  (:mod:`nncf_lossless.algorithms.hint_distillation.hint_points`), ``num_points`` medoids under ``metric``, chosen once on
  ``samples`` calibration inputs when the model is compressed and kept in the checkpoint;
* a list of module names of the teacher.

A student point is the module of the same name (QAT and pruning keep the architecture) unless
``student_points`` maps it. Where channel counts differ, a 1x1 convolution adapter maps the student's
feature to the teacher's; adapters belong to this entry, not to the model, so they are trained
(``trainable_parameters()``, checkpointed) and never exported.

``hints_only_epochs: k`` is FitNets' stage-wise schedule: for the first k epochs the training loss is
the hint loss alone (``exclusive``: the controller drops every other term and the task loss); then
the other entries' losses take over and the hints continue with ``weight_after_hints`` (default:
``weight``; ``0`` stops them, as FitNets does).

The teacher's features come from its forward on the batch: the one ``label_preserving_distillation``
already ran for its logits when that entry is there (same ``inputs`` object, after this step's
student forward), otherwise one extra FP32 forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from nncf_lossless.algorithm import AlgorithmBase, CompressionContext
from nncf_lossless.algorithms.hint_distillation.hint_points import select_hint_points
from nncf_lossless.algorithms.hint_distillation.losses import hint_loss
from nncf_lossless.algorithms.hint_distillation.schema import NAME, SCHEMA  # noqa: F401 (re-exported)
from nncf_lossless.errors import ConfigError


@dataclass
class HintDistillation(AlgorithmBase):
    params: dict[str, Any]
    name: str = NAME
    points: list[str] | None = None  # teacher module names, once known
    selection: dict[str, Any] | None = field(default=None, repr=False)  # the auto selection's JSON
    adapters: nn.ModuleDict = field(default_factory=nn.ModuleDict, repr=False)
    epochs_started: int = 0
    model: nn.Module | None = field(default=None, repr=False)
    teacher: nn.Module | None = field(default=None, repr=False)
    example_input: torch.Tensor | None = field(default=None, repr=False)
    _student: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _teacher: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _teacher_input: torch.Tensor | None = field(default=None, repr=False)  # what filled ``_teacher``
    _handles: list[RemovableHandle] = field(default_factory=list, repr=False)

    def apply(self, model: nn.Module, ctx: CompressionContext) -> nn.Module:
        if self.params["hint_points"] != "auto":
            self.points = list(self.params["hint_points"])
            return model
        if ctx.calibration_data is None:
            raise ConfigError("hint_points: 'auto' needs calibration_data to run the teacher on")
        selection = select_hint_points(ctx.reference, ctx.calibration_data, num_points=self.params["num_points"],
                                       metric=self.params["metric"], samples=self.params["samples"],
                                       seed=self.params["seed"], candidates=self.params.get("candidates"))
        self.points, self.selection = selection.points, selection.to_json()
        return model

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None:
        self.model, self.teacher, self.example_input = model, ctx.reference, ctx.example_input
        if self.points is not None:  # on restore they arrive with load_state_dict
            self._hook()

    @property
    def exclusive(self) -> bool:
        """True while the schedule trains on hints alone (the controller then drops every other term)."""
        return 0 < self.epochs_started <= self.params["hints_only_epochs"]

    def loss(self, outputs: torch.Tensor | None, targets: torch.Tensor | None,
             inputs: torch.Tensor | None) -> torch.Tensor | None:
        if not self._student:
            return None  # no student forward since the last loss (e.g. evaluation only)
        if inputs is None:
            raise ValueError(f"{NAME}: ctrl.loss(outputs, targets, inputs) needs the batch's inputs for the teacher")
        if self._teacher_input is not inputs or not all(p in self._teacher for p in self.points):
            self._teacher.clear()
            with torch.no_grad():
                self.teacher(inputs)
        pairs = [(self._adapted(p, self._student[p]), self._teacher[p]) for p in self.points if p in self._student]
        self._student.clear()
        weight = self.params["weight"]
        if self.epochs_started > self.params["hints_only_epochs"] > 0:
            weight = self.params.get("weight_after_hints", weight)
        return weight * hint_loss(pairs) if pairs and weight > 0 else None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.adapters.parameters())

    def epoch_step(self) -> None:
        self.epochs_started += 1

    def statistics(self) -> dict[str, Any]:
        return {"hint_points": list(self.points or []), "adapters": [p for p in self.points or [] if self.adapter(p) is not None],
                "hints_only": self.exclusive, **({"selection": {k: self.selection[k] for k in ("candidates", "metric", "samples")}}
                                                 if self.selection else {})}

    def state_dict(self) -> dict[str, Any]:
        return {"points": list(self.points or []), "selection": self.selection, "epochs_started": self.epochs_started,
                "adapters": self.adapters.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.epochs_started = int(state.get("epochs_started", 0))
        self.selection = state.get("selection")
        if self.points is None:
            self.points = list(state["points"])
            self._hook()
        self.adapters.load_state_dict(state.get("adapters", {}))

    def _student_name(self, point: str) -> str:
        return self.params["student_points"].get(point, point)

    def _hook(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        student_modules, teacher_modules = dict(self.model.named_modules()), dict(self.teacher.named_modules())
        for i, point in enumerate(self.points):
            if point not in teacher_modules:
                raise ConfigError(f"hint_points[{i}]: no module named {point!r} in the reference model")
            if self._student_name(point) not in student_modules:
                raise ConfigError(f"student_points: no module named {self._student_name(point)!r} in the compressed model")
            self._handles.append(student_modules[self._student_name(point)].register_forward_hook(self._record(self._student, point)))
            self._handles.append(teacher_modules[point].register_forward_hook(self._record(self._teacher, point)))
        self._handles.append(self.teacher.register_forward_pre_hook(self._teacher_ran))
        self._handles.append(self.model.register_forward_pre_hook(self._student_runs))
        self._make_adapters()

    def _teacher_ran(self, _module, args) -> None:
        self._teacher_input = args[0] if args else None

    def _student_runs(self, _module, _args) -> None:
        # A new student forward starts a new step: the teacher's features so far belong to an older batch.
        self._teacher.clear()
        self._teacher_input = None

    def _make_adapters(self) -> None:
        """A 1x1 conv per point whose student and teacher channel counts differ (found with one forward)."""
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            self.model(self.example_input)
            self.teacher(self.example_input)
        self.model.train(was_training)
        for point in self.points:
            s, t = self._student[point], self._teacher[point]
            if s.shape[1] != t.shape[1] and _key(point) not in self.adapters:
                self.adapters[_key(point)] = nn.Conv2d(s.shape[1], t.shape[1], 1).to(s.device)
        self._student.clear()
        self._teacher.clear()

    def adapter(self, point: str) -> nn.Module | None:
        """The 1x1 conv adapter of a hint point, or ``None`` where channel counts match."""
        return self.adapters[_key(point)] if _key(point) in self.adapters else None  # noqa: SIM401 (ModuleDict has no get)

    def _adapted(self, point: str, feature: torch.Tensor) -> torch.Tensor:
        adapter = self.adapter(point)
        return adapter(feature) if adapter is not None else feature

    @staticmethod
    def _record(store: dict[str, torch.Tensor], point: str):
        def hook(_module, _args, output):
            if torch.jit.is_tracing():
                return
            store[point] = output[0] if isinstance(output, (tuple, list)) else output
        return hook


def _key(point: str) -> str:
    return point.replace(".", ":")  # ModuleDict keys cannot hold dots

