"""``repair``: load, check, search, write the repaired IR, its report and plot, all or nothing.

Ground truth is the reference IR in f32 on CPU, as for ``check``; every candidate runs the way
``check`` counts a compressed IR (the checker's ``compile_ir`` with one stream and ``infer_async``,
the same batch), so the counts the search sees are the counts ``check`` reports. The search never
counts with THROUGHPUT streams: OpenVINO 2026.4 CPU computed a 4-bit IR wrongly with two streams
(``bench/repro_openvino_streams.py``), which sent an earlier search after errors of the runtime.
The final before/after counts *are* a ``run_check`` of the written files, with its THROUGHPUT
pass reported beside them; throughput is timed with the THROUGHPUT hint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from nncf_lossless.checker.atomic import write_json
from nncf_lossless.checker.core import RT_NAMESPACE, Progress, check_compatible, read_classifier, run_check
from nncf_lossless.checker.errors import DataError
from nncf_lossless.checker.ov_runner import compile_ir, infer_async

from .search import Evaluation, nmse, search
from .surgery import RESTORE_MODES, QuantizerGroup, layer_names, quantizer_groups, reference_weights, revert

REPAIRED_IR = "repaired.xml"
REPORT = "repair.json"
PLOT = "repair.png"
REPORT_VERSION = 1


def repair(
    reference: str | Path,
    compressed: str | Path,
    validation: tuple[np.ndarray, np.ndarray],
    output_dir: str | Path,
    *,
    max_mismatches: int,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    device: str = "CPU",
    precision: str | None = "f32",
    restore_mode: str = "activations_and_weights",
    batch_size: int = 8,
    prune: bool = True,
    ranking_subset_size: int = 300,
    throughput_samples: int = 2000,
    progress: Progress | None = None,
    sources: dict[str, str] | None = None,
    memo: dict[Any, Evaluation] | None = None,
) -> dict[str, Any]:
    """Repairs ``compressed`` against ``reference`` on ``validation`` (inputs, labels); returns the report.

    Writes ``repaired.xml``/``.bin``, ``repair.json`` and ``repair.png`` into ``output_dir``, or,
    if even every quantizer group in float exceeds ``max_mismatches``, only the report and plot
    (``budget_met`` false): a ``repaired.xml`` always meets its budget. ``test`` is only measured,
    never searched on. Groups are ranked on ``ranking_subset_size`` validation samples (NNCF's
    default 300; 0: all): every mismatched one, then those whose logits are furthest from the
    reference's (NNCF's subset selection); the budget is always checked on the whole set.
    Throughput is :func:`measure_throughput` on ``throughput_samples`` test (else validation) samples.
    ``precision=None`` is the device default. ``sources`` names the data files
    in the report. ``memo`` keeps evaluations across calls that differ only in ``max_mismatches``
    (same IRs, data and settings): a second budget reuses the ranking and the greedy prefix.
    Problems with the inputs raise :class:`DataError` before anything is written.
    """
    if isinstance(max_mismatches, bool) or not isinstance(max_mismatches, int) or max_mismatches < 0:
        raise DataError(f"--max-mismatches: must be a whole number >= 0, got {max_mismatches!r}")
    if restore_mode not in RESTORE_MODES:
        raise DataError(f"--restore-mode: {restore_mode!r} is not one of {', '.join(RESTORE_MODES)}")
    if batch_size < 1:
        raise DataError(f"--batch-size: must be at least 1, got {batch_size}")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"--output-dir: {out} exists and is not a directory")
    core = ov.Core()
    if device not in core.available_devices:
        raise DataError(f"--device: {device} is not available here (available: {', '.join(core.available_devices)})")
    ref_model = read_classifier(reference, core, "--reference")
    comp_model = read_classifier(compressed, core, "--compressed")
    val_inputs, val_labels = (np.asarray(a) for a in validation)
    _check_pair(ref_model, comp_model, reference, compressed)
    check_compatible({f"--reference {reference}": ref_model, f"--compressed {compressed}": comp_model}, val_inputs.shape[1:])
    if test is not None and list(test[0].shape[1:]) != list(val_inputs.shape[1:]):
        raise DataError(f"--test: samples of shape {list(test[0].shape[1:])}, but --data has {list(val_inputs.shape[1:])}")
    if len(val_inputs) == 0:
        raise DataError("--data: no samples")
    groups = quantizer_groups(comp_model)
    weights = reference_weights(comp_model, ref_model) if restore_mode == "activations_and_weights" else None

    static_shape = [batch_size, *val_inputs.shape[1:]]

    def run(model: ov.Model, dev: str, prec: str | None, inputs: np.ndarray = val_inputs) -> tuple[np.ndarray, float]:
        compiled = compile_ir(model, dev, prec, core, static_shape=static_shape)
        start = time.perf_counter()
        logits = infer_async(compiled, inputs, batch_size)
        return logits, time.perf_counter() - start

    ref_logits, _ = run(ref_model.clone(), "CPU", "f32")
    cache: dict[Any, Evaluation] = memo if memo is not None else {}

    def measure(indices: Sequence[int], subset: np.ndarray | None = None) -> tuple[Evaluation, np.ndarray]:
        inputs, ref = (val_inputs, ref_logits) if subset is None else (val_inputs[subset], ref_logits[subset])
        logits, seconds = run(revert(comp_model, [groups[i] for i in indices], weights), device, precision, inputs)
        return Evaluation(mismatch_ids=tuple(np.flatnonzero(logits.argmax(1) != ref.argmax(1)).tolist()),
                          nmse=nmse(ref, logits), images_per_second=len(logits) / seconds if seconds else None), logits

    def evaluate(indices: Sequence[int]) -> Evaluation:
        key = frozenset(indices)
        if key not in cache:
            cache[key] = measure(indices)[0]
        return cache[key]

    before, before_logits = measure([])
    cache.setdefault(frozenset(), before)
    subset = _ranking_subset(ref_logits, before_logits, ranking_subset_size)
    result = search(len(groups), evaluate, max_mismatches, prune=prune, progress=progress,
                    rank=None if subset is None else (lambda g: _memo(cache, ("rank", g), lambda: measure([g], subset)[0])))
    chosen = [groups[i] for i in result.reverted]

    requested = precision or "default"
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "reference": str(reference), "compressed": str(compressed),
        "device": device, "requested_precision": requested, "restore_mode": restore_mode,
        "max_mismatches": max_mismatches, "budget_met": result.budget_met,
        "repaired": str(out / REPAIRED_IR) if result.budget_met else None,
        "num_groups": len(groups),
        "groups": [g.describe() for g in groups],
        "reverted_layers": layer_names(chosen),
        "reverted_layer_labels": [label for g in chosen for label in g.operation_labels],
        "reverted_groups": [{"group": i, **groups[i].describe()} for i in result.reverted],
        "ranking": result.ranking,
        "pruned_groups": result.pruned,
        "steps": [{**s, "layers": layer_names([groups[i] for i in s["reverted_groups"]])} for s in result.steps],
        "search_validation_mismatches": {"before": result.before.mismatches, "after": result.after.mismatches},
        "ranking_subset_size": len(val_inputs) if subset is None else len(subset),
        "sources": sources or {},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.repair-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; it becomes the user's output directory
    try:
        written = [tmp / REPORT, tmp / PLOT]
        repaired_xml = tmp / REPAIRED_IR
        if result.budget_met:
            repaired = revert(comp_model, chosen, weights)
            _set_rt_info(repaired, chosen, report, Path(compressed).name)
            ov.save_model(repaired, repaired_xml, compress_to_fp16=False)
            written = [repaired_xml.with_suffix(".bin"), repaired_xml, *written]
        models = [reference, compressed] + ([repaired_xml] if result.budget_met else [])
        report["validation"] = _measure(reference, models, val_inputs, val_labels, device, requested, batch_size, progress)
        if test is not None:
            report["test"] = _measure(reference, models, *test, device, requested, batch_size, progress)
        speed_inputs = (test[0] if test is not None else val_inputs)[:throughput_samples]
        names = dict(zip(("fp32_reference", "compressed", "repaired"), models))
        report["throughput"] = _throughput(measure_throughput(names, speed_inputs, device, precision, batch_size, core=core))
        _finish_paths(report, tmp, out)
        write_json(report, tmp / REPORT)
        from .plot import plot_repair

        if not plot_repair(report, tmp / PLOT):
            written.remove(tmp / PLOT)
        _publish(tmp, out, written)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _memo(cache: dict[Any, Evaluation], key: Any, compute: Any) -> Evaluation:
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def _ranking_subset(ref_logits: np.ndarray, logits: np.ndarray, size: int) -> np.ndarray | None:
    """NNCF's ranking subset (the items with the largest error), every mismatched sample first; None: all."""
    from nncf.quantization.algorithms.accuracy_control.subset_selection import get_subset_indices_pot_version

    if size <= 0 or size >= len(ref_logits):
        return None
    diff = ((ref_logits - logits) ** 2).sum(1) / np.maximum((ref_logits ** 2).sum(1), 1e-12)
    errors = (ref_logits.argmax(1) != logits.argmax(1)) + diff / (1 + diff)  # a flip outranks any drift
    return np.array(get_subset_indices_pot_version(errors.tolist(), size))


def _check_pair(ref: ov.Model, comp: ov.Model, ref_path: str | Path, comp_path: str | Path) -> None:
    """Both IRs take the same inputs and give the same number of classes."""
    shapes = [m.input(0).get_partial_shape() for m in (ref, comp)]
    if not shapes[0].compatible(shapes[1]):
        raise DataError(f"--compressed {comp_path}: input shape {shapes[1]} does not match the reference "
                        f"{ref_path} ({shapes[0]})")
    classes = [m.output(0).get_partial_shape()[1] for m in (ref, comp)]
    if classes[0].is_static and classes[1].is_static and classes[0].get_length() != classes[1].get_length():
        raise DataError(f"--compressed {comp_path}: {classes[1].get_length()} classes, but the reference "
                        f"{ref_path} has {classes[0].get_length()}")


def _set_rt_info(model: ov.Model, chosen: list[QuantizerGroup], report: dict[str, Any], source: str) -> None:
    model.set_rt_info("repaired", [RT_NAMESPACE, "role"])
    model.set_rt_info(source, [RT_NAMESPACE, "repaired_from"])
    model.set_rt_info(json.dumps(layer_names(chosen)), [RT_NAMESPACE, "reverted_layers"])
    model.set_rt_info(json.dumps([q for g in chosen for q in g.quantizers]), [RT_NAMESPACE, "reverted_quantizers"])
    model.set_rt_info(json.dumps({k: report[k] for k in ("max_mismatches", "device", "requested_precision", "restore_mode")}),
                      [RT_NAMESPACE, "repair"])


def _measure(reference: str | Path, models: list[str | Path], inputs: np.ndarray, labels: np.ndarray, device: str,
             precision: str, batch_size: int, progress: Progress | None) -> dict[str, Any]:
    """A ``run_check`` of the reference (as a model too: its speed), the compressed and the repaired IR."""
    check = run_check(reference, models, inputs, labels, devices=[device], precisions=[precision],
                      batch_size=batch_size, progress=progress)
    runs = check["runs"]
    names = ["fp32_reference", "compressed", "repaired"]
    out: dict[str, Any] = {"num_samples": len(inputs)}
    for name, run in zip(names, runs):
        out[name] = {"mismatches": run["mismatches"], "accuracy": run["compressed"]["accuracy"],
                     "precision": run["precision"], "images_per_second": run["images_per_second"],
                     "throughput_mismatches": run["throughput"]["mismatches"],
                     "throughput_labels_differ_from_one_stream": run["throughput"]["labels_differ_from_one_stream"]}
        if name == "repaired":
            out[name]["mismatch_ids"] = run["mismatch_ids"]
    out["reference_accuracy"] = runs[0]["reference"]["accuracy"]
    return out


def measure_throughput(models: dict[str, str | Path | ov.Model], inputs: np.ndarray, device: str, precision: str | None,
                       batch_size: int = 8, repeats: int = 3, core: ov.Core | None = None) -> dict[str, Any]:
    """Images/s of each IR with the checker's runner (THROUGHPUT hint, ``infer_async``): the best of
    ``repeats`` passes, the IRs taking turns, so a busy machine slows them alike and the best pass is
    the least disturbed one."""
    core = core or ov.Core()
    static_shape = [batch_size, *inputs.shape[1:]]
    compiled = {name: compile_ir(path if isinstance(path, ov.Model) else str(path), device, precision, core,
                                 throughput=True, static_shape=static_shape) for name, path in models.items()}
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, model in compiled.items():
            start = time.perf_counter()
            infer_async(model, inputs, batch_size)
            seconds = time.perf_counter() - start
            best[name] = max(best.get(name, 0.0), len(inputs) / seconds if seconds > 0 else 0.0)
    return {"images_per_second": best, "num_samples": len(inputs), "repeats": repeats, "device": device,
            "precision": {name: model.precision for name, model in compiled.items()}}


def _throughput(measured: dict[str, Any]) -> dict[str, Any]:
    speed = measured["images_per_second"]

    def ratio(a: str, b: str) -> float | None:
        return speed[a] / speed[b] if speed.get(a) and speed.get(b) else None

    return {**measured,
            "repaired_vs_compressed": ratio("repaired", "compressed"), "repaired_vs_fp32": ratio("repaired", "fp32_reference"),
            "compressed_vs_fp32": ratio("compressed", "fp32_reference")}


def _finish_paths(report: dict[str, Any], tmp: Path, out: Path) -> None:
    """run_check named the temporary repaired IR; the report names where it ends up."""
    text = json.dumps(report)
    report.clear()
    report.update(json.loads(text.replace(json.dumps(str(tmp))[1:-1], json.dumps(str(out))[1:-1])))


def _publish(tmp: Path, out: Path, written: list[Path]) -> None:
    """A new ``out`` is one rename; into an existing one, file by file, weights before the .xml, report last."""
    if not out.exists():
        for stale in set(tmp.iterdir()) - set(written):
            stale.unlink()
        os.replace(tmp, out)
        return
    for path in sorted(written, key=lambda p: p.name == REPORT):
        os.replace(path, out / path.name)
    if REPAIRED_IR not in {p.name for p in written}:
        # An older repaired IR in ``out`` would no longer match the report next to it.
        for suffix in (".xml", ".bin"):
            (out / REPAIRED_IR).with_suffix(suffix).unlink(missing_ok=True)
