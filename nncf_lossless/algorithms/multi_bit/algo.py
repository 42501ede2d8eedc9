"""The ``multi_bit`` entry: one weight-shared network trained at once for several bit-widths.

After "All at Once Network Quantization via Collaborative Knowledge Transfer" (Sun, Panda, Chen et
al., arXiv 2103.01435; "Improved Techniques for Quantizing Deep Networks with Adaptive
Bit-Widths", WACV 2024). What the paper states (its abstract; the full text was not available
to us): one network whose bit-width is chosen at inference, trained jointly at every bit-width;
an *adaptive selection* of a higher-precision teacher for each lower-precision student; and
*dynamic block swapping*, randomly replacing blocks of the lower-precision student by the
corresponding blocks of the higher-precision teacher. The concrete rules below are ours:

* **Switchable state** (:mod:`~nncf_lossless.algorithms.multi_bit.banks`, as in Any-Precision
  DNNs): weights shared; quantizer ranges and BatchNorm affine + statistics kept per bit-width.
  ``ctrl.set_bits(b)`` makes bit-width ``b`` live; training, evaluation, checkpoints and the
  optimizer see the highest bit-width's tensors as the model's, the others as extra parameters.
* **Quantization**: this entry quantizes the model itself with ``nncf.quantize`` at 8 bits (its
  NNCF parameters are the ``quantization`` entry's, which it replaces), then initialises every
  lower bit-width's ranges by the output-MSE shrink search of
  :mod:`~nncf_lossless.algorithms.quantization.low_bit` from the 8-bit calibration. The
  OpenVINO-CPU clamp-only quantizers (``match_openvino_cpu``) are found per bit-width.
* **Each step** (:mod:`~nncf_lossless.algorithms.multi_bit.schedulers`): the trainer's forward runs
  the highest bit-width; this entry's loss then runs each other bit-width trained this step
  (all, or ``bits_per_step`` of them), highest first, each forward on the same batch.
* **Teacher** (:mod:`~nncf_lossless.algorithms.multi_bit.losses`): the highest bit-width learns
  from the FP32 reference; a lower one, per sample, from the nearest higher bit-width whose label
  is the reference's, else from the reference.
* **Dynamic block swapping**: in a student's forward each block runs, with a probability that
  decays to 0 over ``block_swap.until_fraction`` of training, at the next higher bit-width
  trained this step (its quantizer ranges and BN); swapped blocks' BN statistics are not updated.
* **Loss**: per bit-width ``label_ce * H(y, p_S) + kd * T^2 KL(p_T^T || p_S^T)`` (defaults
  0.5 / 0.5, T = 4), summed over bit-widths. With a ``label_preserving_distillation`` entry, that
  entry's loss is the highest bit-width's (against the reference) and its weights, temperature
  and margin are used for every lower bit-width too; this entry's own ``weights`` are then ignored.
  This entry owns the task loss.

``ctrl.export(dir)`` writes ``reference.xml`` and one ``compressed_w{b}.xml`` per bit-width.
With ``frozen_bn``, the freeze (and ``freeze_affine``) applies to every bit-width's BN; its
``batch_norm_adaptation`` re-estimates the highest bit-width's statistics only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import nncf
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.hooks import RemovableHandle

from nncf_lossless.algorithm import AlgorithmBase, CompressionContext
from nncf_lossless.algorithms.distillation.algo import DEFAULT_WEIGHTS as DISTILLATION_WEIGHTS
from nncf_lossless.algorithms.distillation.algo import NAME as DISTILLATION
from nncf_lossless.algorithms.multi_bit import banks as B
from nncf_lossless.algorithms.multi_bit import losses as L
from nncf_lossless.algorithms.multi_bit.schedulers import MultiBitSchedule
from nncf_lossless.algorithms.multi_bit.schema import _QUANTIZATION_KEYS, DEFAULT_WEIGHTS, NAME, SCHEMA  # noqa: F401
from nncf_lossless.algorithms.quantization import low_bit
from nncf_lossless.algorithms.quantization.algo import Quantization
from nncf_lossless.algorithms.quantization.cpu_rounding import _clamp_only, match_cpu_rounding
from nncf_lossless.algorithms.quantization.quantizer_sites import quantizer_sites
from nncf_lossless.algorithms.quantization.schema import SCHEMA as QUANTIZATION_SCHEMA
from nncf_lossless.config import fill_defaults
from nncf_lossless.errors import ConfigError


@dataclass
class MultiBit(AlgorithmBase):
    params: dict[str, Any]
    name: str = NAME
    owns_task_loss: bool = True
    model: nn.Module | None = field(default=None, repr=False)
    reference: nn.Module | None = field(default=None, repr=False)
    banks: B.Banks | None = field(default=None, repr=False)
    schedule: MultiBitSchedule | None = field(default=None, repr=False)
    steps: int = 0  # step() calls so far
    distillation: dict[str, Any] | None = None  # the label_preserving_distillation entry, if configured
    clamp_sets: dict[int, list[nn.Module]] = field(default_factory=dict, repr=False)
    clamp_handles: list[RemovableHandle] = field(default_factory=list, repr=False)
    latest: dict[str, dict[str, float]] = field(default_factory=dict)
    teacher_counts: dict[int, Counter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bits = sorted(self.params.get("bits", [8, 6, 4, 2]), reverse=True)
        self.activation_bits = self.params.get("activation_bits")

    # -- the protocol -----------------------------------------------------------------------------------------

    def apply(self, model: nn.Module, ctx: CompressionContext) -> nn.Module:
        _check_entries(ctx)
        # The quantization entry's own defaults for every key multi_bit does not take (its schema grows).
        qparams = {"algorithm": "quantization", **{k: self.params[k] for k in _QUANTIZATION_KEYS if k in self.params},
                   "weights": {"bits": 8}, "activations": {"bits": 8}}
        fill_defaults(QUANTIZATION_SCHEMA, qparams)
        quantization = Quantization(qparams)
        model = quantization.apply(model, ctx)
        self._build(model, ctx)
        dataset = ctx.nncf_dataset("algorithm: multi_bit")
        calibrated = self.banks.state_dict()[str(self.bits[0])]
        for bits in self.bits:
            self.banks.activate(bits)
            changed = [u.module for u in self.banks.units if u.is_quantizer
                       and self._bits_of(bits, u.site.is_weight) != 8]
            if changed:
                # Every bit-width starts from the 8-bit calibration, not from the previous bit-width's search.
                with torch.no_grad():
                    for u in self.banks.units:
                        if u.is_quantizer:
                            for slot, p in self.banks.banks[bits].params[u.name].items():
                                p.copy_(calibrated["params"][u.name][slot])
                low_bit.search_ranges(model, ctx.reference, changed, _first(dataset.get_inference_data(),
                                                                              self.params["range_search_samples"]))
            if bits != self.bits[0] and self.params["batch_norm_adaptation"]["enabled"]:
                nncf.batch_norm_adaptation(model, dataset, num_iterations=self.params["batch_norm_adaptation"]["num_iterations"])
        self.banks.activate(self.bits[0])
        return model

    def attach(self, model: nn.Module, ctx: CompressionContext) -> None:
        _check_entries(ctx)
        if self.banks is None or self.model is not model:
            self._build(model, ctx)
        self.reference = ctx.reference
        found = [e for e in ctx.entries if e["algorithm"] == DISTILLATION]
        self.distillation = found[0] if found else None
        p = self.params
        blocks = p["block_swap"]["blocks"] or B.default_blocks(model)
        total = ctx.epochs * ctx.steps_per_epoch if ctx.epochs and ctx.steps_per_epoch else None
        self.schedule = MultiBitSchedule(self.bits, p["bits_per_step"], blocks, p["block_swap"]["probability"],
                                         p["block_swap"]["until_fraction"], total, p["seed"])
        self._find_clamp_sets(model, ctx)
        self.set_bits(self.bits[0])

    def loss(self, outputs: torch.Tensor | None, targets: torch.Tensor | None,
             inputs: torch.Tensor | None) -> torch.Tensor | None:
        """Every planned bit-width's terms; without ``targets`` (NNCF 2's ``ctrl.loss()``) the label CE is left out."""
        if outputs is None:
            return None  # no forward yet
        if inputs is None:
            raise ValueError(f"{NAME}: ctrl.loss(outputs, targets, inputs) needs the batch's inputs")
        if self.banks.active != self.bits[0]:
            raise RuntimeError(f"{NAME}: the training forward must run at {self.bits[0]} bits (set_bits({self.banks.active}) "
                               "is active); call ctrl.set_bits back before training")
        plan = self.schedule.plan(max(self.steps - 1, 0))
        weights, temperature, gap = self._loss_weights()
        if targets is None:
            weights = {**weights, "label_ce": 0.0}
        if self.reference.training:
            self.reference.eval()
        with torch.no_grad():
            reference = self.reference(inputs)
        total = torch.zeros((), device=outputs.device)
        self.latest = {}
        top = self.bits[0]
        if self.distillation is None:
            total, self.latest[str(top)] = L.weighted_terms(outputs, reference, targets, weights, temperature, gap)
        self._count(top, torch.full((len(outputs),), L.FP32))
        logits = {top: outputs.detach()}
        try:
            for bits in plan.bits[1:]:
                higher = {b: v for b, v in logits.items() if b > bits}
                teacher, chosen = L.select_teacher(self.params["teacher"], higher, reference)
                out = self._forward(inputs, bits, plan.swapped.get(bits, []), min(higher))
                term, self.latest[str(bits)] = L.weighted_terms(out, teacher, targets, weights, temperature, gap)
                total = total + term
                logits[bits] = out.detach()
                self._count(bits, chosen)
        finally:
            self.set_bits(top)
        return total

    def step(self) -> None:
        if self.banks.active != self.bits[0]:
            self.set_bits(self.bits[0])
        self._sync_inactive_buffers()
        self.steps += 1

    def epoch_step(self) -> None:
        self.teacher_counts = {}

    def statistics(self) -> dict[str, Any]:
        teachers = {}
        for bits, counts in self.teacher_counts.items():
            n = sum(counts.values())
            teachers[str(bits)] = {("fp32" if t == L.FP32 else f"w{t}"): c / n for t, c in sorted(counts.items())}
        return {
            "bits": self.bits,
            "activation_bits": self.activation_bits,
            "active_bits": self.banks.active if self.banks else None,
            "steps": self.steps,
            "teacher_rule": self.params["teacher"],
            "teachers_this_epoch": teachers,
            "swap_probability": self.schedule.probability(self.steps) if self.schedule else None,
            "blocks": self.schedule.blocks if self.schedule else [],
            "num_quantizers": sum(u.is_quantizer for u in self.banks.units) if self.banks else 0,
            "num_bn_layers": sum(not u.is_quantizer for u in self.banks.units) if self.banks else 0,
            "clamp_only_on_cpu": {str(b): len(qs) for b, qs in self.clamp_sets.items()},
            "terms": self.latest,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "active": self.banks.active, "banks": self.banks.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.steps = int(state["steps"])
        # The model's own state_dict went into whichever bank was live when it was saved; the banks hold them all.
        self.banks.load_state_dict(state["banks"])
        self.set_bits(self.bits[0])

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every bit-width's quantizer ranges and BN affine that the model does not hold right now."""
        return self.banks.parameters() if self.banks else []

    # -- switching ----------------------------------------------------------------------------------------------

    @property
    def bit_widths(self) -> list[int]:
        return list(self.bits)

    @property
    def active_bits(self) -> int:
        return self.banks.active

    def set_bits(self, bits: int, overrides: dict[str, int] | None = None) -> None:
        """Makes ``bits`` live for the whole model (``overrides``: blocks at other bits), CPU clamps included."""
        if bits not in self.bits:
            raise ConfigError(f"set_bits: {bits} is not one of this model's bit-widths {self.bits}")
        self.banks.activate(bits, overrides)
        for handle in self.clamp_handles:
            handle.remove()
        self.clamp_handles = [q.register_forward_hook(_clamp_only) for q in self.clamp_sets.get(bits, [])]

    # -- internals ----------------------------------------------------------------------------------------------

    def _bits_of(self, bits: int, is_weight: bool) -> int:
        return bits if is_weight or self.activation_bits is None else self.activation_bits

    def _build(self, model: nn.Module, ctx: CompressionContext) -> None:
        self.model = model
        blocks = self.params["block_swap"]["blocks"] or B.default_blocks(model)
        sites = quantizer_sites(model, ctx.example_input)
        if not sites:
            raise ConfigError("algorithm: multi_bit found no NNCF quantizers in the model")
        units = B.quantizer_units(sites, blocks) + B.batch_norm_units(model, blocks, exclude=ctx.reference.modules())
        self.banks = B.Banks(units, [(b, self._bits_of(b, False)) for b in self.bits])

    def _find_clamp_sets(self, model: nn.Module, ctx: CompressionContext) -> None:
        self.clamp_sets = {}
        if not self.params.get("match_openvino_cpu", True):
            return
        by_op = {u.site.op_name: u.module for u in self.banks.units if u.is_quantizer}
        for bits in self.bits:
            self.banks.activate(bits)
            found = match_cpu_rounding(model, ctx.example_input)
            found.remove()  # only the set is kept; set_bits hooks the live bit-width's
            self.clamp_sets[bits] = [by_op[name] for name in found.clamped]
        self.banks.activate(self.bits[0])

    def _forward(self, inputs: torch.Tensor, bits: int, swapped: list[str], source: int) -> torch.Tensor:
        self.set_bits(bits, {block: source for block in swapped})
        # A swapped block's BN normalises with the batch but must not move the higher bit-width's statistics.
        frozen = [u.module for u in self.banks.units if not u.is_quantizer and u.block in swapped]
        momenta = [bn.momentum for bn in frozen]
        for bn in frozen:
            bn.momentum = 0.0
        try:
            return self.model(inputs)
        finally:
            for bn, m in zip(frozen, momenta):
                bn.momentum = m

    def _loss_weights(self) -> tuple[dict[str, float], float, float]:
        if self.distillation is not None:
            d = self.distillation
            weights = d.get("weights", {})
            if not isinstance(weights, dict):
                raise ConfigError(f'{NAME}: {DISTILLATION}.weights "auto" must be resolved before training')
            weights = {**DISTILLATION_WEIGHTS, **weights}
            weights.pop("teacher", None)
            return weights, d.get("temperature", 4.0), d.get("margin_gap", 1.0)
        return {**DEFAULT_WEIGHTS, **self.params["weights"]}, self.params["temperature"], 1.0

    def _count(self, bits: int, chosen: torch.Tensor) -> None:
        self.teacher_counts.setdefault(bits, Counter()).update(chosen.tolist())

    def _sync_inactive_buffers(self) -> None:
        # DDP broadcasts the live (highest) bank's BN statistics from rank 0 on every forward; do the
        # same for the other bit-widths', which each rank's own forwards moved.
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for buffer in self.banks.buffers(self.bits[1:]):
                dist.broadcast(buffer, src=0)


def _check_entries(ctx: CompressionContext) -> None:
    names = {e["algorithm"] for e in ctx.entries}
    if "quantization" in names:
        raise ConfigError("algorithm: multi_bit quantizes the model itself (it takes the quantization entry's "
                          "parameters); remove the quantization entry")
    if "hint_distillation" in names:
        # Its feature hooks would record the last (lowest) bit-width's forward of each step, not the trained one.
        raise ConfigError("algorithm: multi_bit does not work with hint_distillation yet; remove one of them")


def _first(batches: Iterable[torch.Tensor], samples: int) -> Iterator[torch.Tensor]:
    seen = 0
    for x in batches:
        if seen >= samples:
            return
        yield x[: samples - seen]
        seen += len(x)
