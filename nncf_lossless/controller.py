"""The compression controller: owns the algorithms, their losses, schedules and state.

``create_compressed_model`` is NNCF 2's entry point, rebuilt on NNCF 3::

    ctrl, model = create_compressed_model(model, "config.json", calibration_data=loader)
    for epoch in range(epochs):
        ctrl.scheduler.epoch_step()
        for x, y in loader:
            ctrl.scheduler.step()
            out = model(x)
            loss = ctrl.loss(out, y, x) if ctrl.owns_task_loss else criterion(out, y) + ctrl.loss(out, y, x)
            ...
    torch.save(ctrl.state_dict(), "ckpt.pt")          # everything needed to resume
    ctrl.export("ir/")                                # reference.xml + compressed.xml
    deployable = ctrl.strip()                         # the model for inference, without NNCF's training modules
    ctrl.set_bits(4)                                  # multi-bit models: run at 4 bits (ctrl.bit_widths)

NNCF 2's ``loss = criterion(out, y) + ctrl.loss()`` works too: the controller records the inputs
and outputs of the compressed model's last forward, and ``ctrl.loss()`` uses them (terms that need
the targets, such as distillation's label CE, are then left out: the caller adds the task loss).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

import nncf.torch
import torch
from nncf.torch.function_hook.wrapper import is_wrapped
from torch import nn

from nncf_lossless import registry
from nncf_lossless.algorithm import Algorithm, CompressionContext, CompressionStage
from nncf_lossless.config import entry_errors, load_config
from nncf_lossless.errors import ConfigError
from nncf_lossless.models import wrap_if_sequential
from nncf_lossless.scheduler import CompressionScheduler

# Module paths load_from_config may import when restoring hooks: NNCF's and ours.
ALLOWED_HOOK_MODULES = ("nncf.*", "nncf_lossless.*")


@dataclass
class CompressionController:
    model: nn.Module
    reference: nn.Module
    algorithms: list[Algorithm]
    config: dict[str, Any]
    example_input: torch.Tensor
    scheduler: CompressionScheduler = field(init=False)
    last_forward: LastForward = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.scheduler = CompressionScheduler(self.algorithms)
        self.last_forward = LastForward.record(self.model)

    def loss(self, outputs: torch.Tensor | None = None, targets: torch.Tensor | None = None,
             inputs: torch.Tensor | None = None) -> torch.Tensor:
        """The sum of every algorithm's loss terms (a zero tensor if there are none).

        If :attr:`owns_task_loss`, this is the whole training loss (an algorithm such as
        distillation includes the ground-truth CE as one of its weighted terms); otherwise it holds
        only extra terms, to be added to the task loss. ``outputs`` and ``inputs`` default to the
        compressed model's last forward (NNCF 2's ``ctrl.loss()``).
        """
        if outputs is None:
            outputs, inputs = self.last_forward.outputs, inputs if inputs is not None else self.last_forward.inputs
        elif inputs is None and outputs is self.last_forward.outputs:
            inputs = self.last_forward.inputs
        total: torch.Tensor | None = None
        for algo in self._exclusive() or self.algorithms:
            term = algo.loss(outputs, targets, inputs)
            if term is not None:
                total = term if total is None else total + term.to(total.device)
        if total is None:
            device = outputs.device if outputs is not None else self.example_input.device
            total = torch.zeros((), device=device)
        return total

    @property
    def owns_task_loss(self) -> bool:
        """True if an algorithm declares (``owns_task_loss = True``) that ``loss()`` includes the task loss,
        or one is ``exclusive`` for now (its loss alone is the training loss, e.g. hints-only epochs)."""
        return bool(self._exclusive()) or any(algo.owns_task_loss for algo in self.algorithms)

    def _exclusive(self) -> list[Algorithm]:
        return [algo for algo in self.algorithms if algo.exclusive]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer should train: the model's parameters plus any an algorithm adds
        through ``trainable_parameters()`` (e.g. the teacher under Apprentice scheme A)."""
        params = list(self.model.parameters())
        for algo in self.algorithms:
            params += algo.trainable_parameters()
        return params

    def compression_stage(self) -> CompressionStage:
        """NNCF 2's rule over the algorithms' stages: all uncompressed (or none) -> UNCOMPRESSED,
        all fully -> FULLY_COMPRESSED, else PARTIALLY_COMPRESSED."""
        stages = {algo.compression_stage() for algo in self.algorithms}
        if not stages or stages == {CompressionStage.UNCOMPRESSED}:
            return CompressionStage.UNCOMPRESSED
        if stages == {CompressionStage.FULLY_COMPRESSED}:
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED

    def strip(self) -> nn.Module:
        """The compressed model for inference (NNCF 2's ``ctrl.strip()``), in eval mode.

        What export converts to OpenVINO: ``nncf.strip`` for 8-bit quantizers and pruning masks,
        weights baked onto their grid below 8 bits. The controller's model keeps training as before.
        """
        from nncf_lossless.export.ir import stripped

        model = stripped(self.model, self.example_input)
        return (copy.deepcopy(model) if model is self.model else model).eval()

    def statistics(self) -> dict[str, Any]:
        return {"epoch": self.scheduler.epoch, "step": self.scheduler.current_step,
                **{algo.name: algo.statistics() for algo in self.algorithms}}

    def state_dict(self) -> dict[str, Any]:
        """Hook layout (``nncf.torch.get_config``), weights, reference weights and schedule states.

        Only plain types and tensors, so ``torch.load(..., weights_only=True)`` reads it back.
        """
        return {
            "nncf_config": _plain(nncf.torch.get_config(self.model)) if is_wrapped(self.model) else None,
            "model": self.model.state_dict(),
            "reference": self.reference.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "algorithms": {algo.name: algo.state_dict() for algo in self.algorithms},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores weights and schedules into a controller built with the same hook layout."""
        self.model.load_state_dict(state["model"])
        self.reference.load_state_dict(state["reference"])
        self.scheduler.load_state_dict(state["scheduler"])
        for algo in self.algorithms:
            algo.load_state_dict(state["algorithms"].get(algo.name, {}))

    def export(self, out_dir: str | Path, *, metadata: dict[str, Any] | None = None) -> dict[str, Path]:
        """Writes ``reference.xml`` (FP32) and ``compressed.xml`` OpenVINO IRs into ``out_dir``.

        A model with several :attr:`bit_widths` gets one ``compressed_w{b}.xml`` per bit-width instead;
        the result maps ``compressed_w{b}`` to each and ``compressed`` to the highest bit-width's.
        """
        from nncf_lossless.export.ir import export_pair

        bits, active = self.bit_widths, self.active_bits
        variants = {f"w{b}": partial(self.set_bits, b) for b in bits} if bits else None
        try:
            return export_pair(self.model, self.reference, Path(out_dir), example_input=self.example_input,
                               config=self.config, metadata=metadata or {}, variants=variants)
        finally:
            if bits:
                self.set_bits(active)

    def _switching(self) -> list[Algorithm]:
        return [algo for algo in self.algorithms if hasattr(algo, "set_bits")]

    @property
    def bit_widths(self) -> list[int]:
        """The bit-widths :meth:`set_bits` accepts, highest first; empty unless an algorithm switches bits."""
        lists = [set(algo.bit_widths) for algo in self._switching()]
        return sorted(set.intersection(*lists), reverse=True) if lists else []

    @property
    def active_bits(self) -> int | None:
        return self._switching()[0].active_bits if self._switching() else None

    def set_bits(self, bits: int) -> None:
        """Runs the model at ``bits`` from now on: every algorithm with ``set_bits`` (e.g. multi_bit) switches."""
        if not self._switching():
            raise ConfigError("set_bits: no compression entry of this model switches bit-widths (multi_bit does)")
        for algo in self._switching():
            algo.set_bits(bits)


def create_compressed_model(
    model: nn.Module,
    config: str | Path | dict[str, Any],
    calibration_data: Iterable[Any] | None = None,
    *,
    compression_state: dict[str, Any] | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
) -> tuple[CompressionController, nn.Module]:
    """Compresses ``model`` (the trained FP32 reference) as ``config`` says.

    ``calibration_data`` yields input batches (or ``(x, y)`` batches) for NNCF's calibration and
    BN adaptation. With ``compression_state`` (a ``ctrl.state_dict()``), nothing is calibrated: the
    hooks, weights and schedules are restored from it. The reference is kept as a frozen copy in
    eval mode (``ctrl.reference``). Returns the controller and the compressed model.
    """
    config = load_config(config)
    model = wrap_if_sequential(model)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    device = next(model.parameters()).device
    example_input = torch.ones(config["input_info"]["sample_size"], device=device)
    ctx = CompressionContext(example_input=example_input, reference=reference, calibration_data=calibration_data,
                             epochs=epochs, steps_per_epoch=steps_per_epoch, entries=tuple(config["compression"]))
    indexed = sorted(enumerate(config["compression"]), key=lambda e: registry.get(e[1]["algorithm"]).stage)
    algorithms = [(i, registry.get(entry["algorithm"]).builder()(entry)) for i, entry in indexed]
    if compression_state is None:
        for i, algo in algorithms:
            with entry_errors(i):
                model = algo.apply(model, ctx)
    elif compression_state.get("nncf_config") is not None:
        try:
            model = nncf.torch.load_from_config(model, compression_state["nncf_config"],
                                                allowed_modules=ALLOWED_HOOK_MODULES)
        except (KeyError, TypeError, nncf.InternalError) as err:
            raise ConfigError(f"compression_state: cannot restore the compressed model ({err})") from err
    for i, algo in algorithms:
        with entry_errors(i):
            algo.attach(model, ctx)
    ctrl = CompressionController(model, reference, [a for _, a in algorithms], config, example_input)
    if compression_state is not None:
        ctrl.load_state_dict(compression_state)
    return ctrl, model


@dataclass
class LastForward:
    """The inputs and outputs of the compressed model's latest forward (a forward hook keeps them)."""

    inputs: torch.Tensor | None = None
    outputs: torch.Tensor | None = None
    handle: Any = field(default=None, repr=False)

    @classmethod
    def record(cls, model: nn.Module) -> LastForward:
        last = cls()
        last.handle = model.register_forward_hook(last._hook)
        return last

    def __deepcopy__(self, memo: dict[int, Any]) -> LastForward:
        # A deep-copied model (nncf.strip, export) copies its hooks: the copy records afresh, and
        # a training step's outputs, part of an autograd graph, could not be deep-copied anyway.
        return LastForward()

    def _hook(self, _module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return  # an export trace, not a training step
        self.inputs = args[0] if args and isinstance(args[0], torch.Tensor) else None
        self.outputs = output if isinstance(output, torch.Tensor) else None


def _plain(obj: Any) -> Any:
    """NNCF's config holds enums and tuples; JSON round-trip makes it loadable with weights_only."""
    return json.loads(json.dumps(obj, default=lambda o: o.value if isinstance(o, Enum) else str(o)))
