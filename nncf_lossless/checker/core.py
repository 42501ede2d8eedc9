"""Label consistency of compressed IRs against their reference IR across OpenVINO devices.

No torch and no training code, and only relative imports: this module is copied into portable
bundles that run wherever ``openvino`` and ``numpy`` do.

Ground truth is the reference IR in true FP32 on CPU (``INFERENCE_PRECISION_HINT=f32``,
``EXECUTION_MODE_HINT=ACCURACY``, one stream) of this machine, or the reference logits stored in a
bundle. Every compressed IR then runs on every requested device in each of its precision modes, and
each run is compared with that one ground truth, so "GPU f16 flips" means flips against FP32, not
against the reference in f16. Pass the reference IR as a compressed one too to see what the
device alone changes.

A run counts its mismatches with one stream (the LATENCY hint: what the framework computed, and
deterministic) and, unless ``streams="one"``, again with the THROUGHPUT hint's streams, because a
device that deploys with THROUGHPUT gets those labels and they have differed (OpenVINO 2026.4 CPU,
a 4-bit IR: 127 flips with one stream, 1,100 with two). The release gate takes the worse of the two.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from .errors import DataError, UserError, openvino_reason
from .metrics import compare, consistency
from .ov_runner import KNOWN_DEVICES, compile_ir, device_family, infer, infer_async, precision_modes

REPORT_VERSION = 2  # 2: mismatches counted with one stream, THROUGHPUT streams under "throughput"
STREAM_MODES = ("both", "one")
RT_NAMESPACE = "nncf_lossless"


class DeviceError(UserError):
    """A device named explicitly is not available on this machine."""


def check_pair(
    reference_xml: str | Path,
    compressed_xml: str | Path,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    device: str = "CPU",
    precisions: Sequence[str | None] = ("f32", None),
    batch_size: int = 64,
    source_logits: tuple[np.ndarray, np.ndarray] | None = None,
    streams: str = "both",
) -> list[dict[str, Any]]:
    """One report per precision: accuracies, mismatches against the reference IR, flip matrix.

    Counted with one stream; ``streams="both"`` adds ``throughput`` as :func:`run_check` does.
    ``source_logits`` (reference, compressed), from the framework the IRs were exported from, adds
    ``source_vs_ir``: how many top-1 labels each IR changed against its source, and the logit drift.
    """
    _check_streams(streams)
    core = ov.Core()
    reference = compile_ir(reference_xml, "CPU", "f32", core)
    ref_logits = infer(reference, inputs, batch_size)
    reports = []
    for precision in precisions:
        compressed = compile_ir(compressed_xml, device, precision, core)
        comp_logits = infer(compressed, inputs, batch_size)
        report = compare(ref_logits, comp_logits, labels)
        if streams == "both":
            parallel = compile_ir(compressed_xml, device, precision, core, throughput=True)
            report["throughput"] = throughput_counts(ref_logits, comp_logits, infer_async(parallel, inputs, batch_size),
                                                     parallel.streams)
        if source_logits is not None:
            report["source_vs_ir"] = {
                "reference": _drift(source_logits[0], ref_logits),
                "compressed": _drift(source_logits[1], comp_logits),
            }
        reports.append({
            "device": device,
            "requested_precision": precision or "default",
            "precision": compressed.precision,
            "reference_precision": reference.precision,
            "execution_devices": list(compressed.execution_devices),
            **report,
        })
    return reports


def _drift(source: np.ndarray, ir: np.ndarray) -> dict[str, Any]:
    diff = np.abs(np.asarray(source, dtype=np.float64) - ir)
    return {
        "top1_disagreements": int((np.asarray(source).argmax(1) != ir.argmax(1)).sum()),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
    }


# ---- inputs ---------------------------------------------------------------------------------

def load_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``inputs`` (N, ...) float32 and ``labels`` (N,) int from an ``.npz`` file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--data: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("inputs", "labels") if k not in npz.files]
            if missing:
                raise DataError(f"--data: {path} has no {missing[0]!r} array (found: {', '.join(npz.files) or 'none'})")
            inputs, labels = npz["inputs"], npz["labels"]
    except (OSError, ValueError) as err:
        raise DataError(f"--data: {path} is not a readable .npz file ({err})") from err
    if inputs.ndim < 2 or labels.shape != (len(inputs),):
        raise DataError(f"--data: {path}: inputs {list(inputs.shape)} and labels {list(labels.shape)} "
                        "are not (N, ...) and (N,)")
    return inputs.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)


def read_classifier(path: str | Path, core: ov.Core, what: str = "IR") -> ov.Model:
    """Reads an IR and checks it is a single-input classifier with one (N, classes) output."""
    path = Path(path)
    if path.suffix != ".xml" or not path.is_file():
        raise DataError(f"{what}: {path} is not an existing OpenVINO .xml file")
    with path.open("rb") as f:
        head = f.read(256).lstrip()
    # Anything but XML would be offered to every other frontend (TensorFlow's logs to stderr).
    if not head.startswith(b"<"):
        raise DataError(f"{what}: {path} is not a readable OpenVINO IR (not XML: it starts with {head[:16]!r})")
    try:
        model = core.read_model(str(path))
    except RuntimeError as err:
        raise DataError(f"{what}: {path} is not a readable OpenVINO IR ({openvino_reason(err)})") from err
    if len(model.inputs) != 1:
        raise DataError(f"{what}: {path} has {len(model.inputs)} inputs; the checker takes single-input classifiers")
    shape = model.output(0).get_partial_shape()
    if len(model.outputs) != 1 or shape.rank.is_dynamic or shape.rank.get_length() != 2:
        raise DataError(f"{what}: {path} output shape {shape} is not a classifier's (N, classes)")
    return model


def _dims(shape: ov.PartialShape) -> list[int]:
    return [d.get_length() if d.is_static else -1 for d in shape]


def check_compatible(models: dict[str, ov.Model], sample_shape: Sequence[int]) -> None:
    """Every IR takes ``sample_shape`` (without the batch) and all IRs agree on the class count."""
    sample = list(sample_shape)
    classes = {}
    for name, model in models.items():
        dims = _dims(model.input(0).get_partial_shape())
        if len(dims) != len(sample) + 1 or any(d not in (-1, s) for d, s in zip(dims[1:], sample)):
            raise DataError(f"{name}: input shape {dims} does not take samples of shape {sample} (from --data)")
        classes[name] = model.output(0).get_partial_shape()[1]
    (ref_name, ref_classes), *rest = classes.items()
    for name, c in rest:
        if c.is_static and ref_classes.is_static and c.get_length() != ref_classes.get_length():
            raise DataError(f"{name}: {c.get_length()} classes, but the reference {ref_name} has {ref_classes.get_length()}")


def rt_metadata(model: ov.Model) -> dict[str, Any]:
    """The ``nncf_lossless`` rt_info the exporter wrote (class names, shape, mean/std), if any."""
    import json

    out: dict[str, Any] = {}
    for key in ("class_names", "input_shape", "mean", "std", "role"):
        if model.has_rt_info([RT_NAMESPACE, key]):
            value = model.get_rt_info([RT_NAMESPACE, key]).astype(str)
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
    return out


# ---- plan -----------------------------------------------------------------------------------

def plan_devices(devices: Sequence[str] | None, available: Sequence[str], *, skip_missing: bool = False) -> dict[str, str]:
    """``{device: "available" | "absent"}``: the well-known devices and the requested ones.

    ``devices=None`` runs on every available device. A device named explicitly but absent raises
    :class:`DeviceError` unless ``skip_missing``.
    """
    status = {d: ("available" if d in available else "absent") for d in KNOWN_DEVICES}
    status.update({d: "available" for d in available})
    if devices is None:
        return status
    missing = [d for d in devices if d not in available]
    if missing and not skip_missing:
        raise DeviceError(f"--devices: {', '.join(missing)} not available here (available: "
                          f"{', '.join(available) or 'none'}); pass --skip-missing to list it as absent")
    return {**{d: s for d, s in status.items() if s == "absent"},
            **{d: ("available" if d in available else "absent") for d in devices}}


def modes_for(device: str, precisions: Sequence[str] | None) -> list[str | None]:
    """The device's precision modes, or the requested ones ("default" = None); NPU only default."""
    if precisions is None or device_family(device) == "NPU":
        return list(precision_modes(device))
    return [None if p == "default" else p for p in precisions]


# ---- run ------------------------------------------------------------------------------------

Progress = Callable[[str, int], Callable[[int], None]]


def run_check(
    reference: str | Path,
    compressed: Sequence[str | Path],
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    devices: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    skip_missing: bool = False,
    reference_logits: np.ndarray | None = None,
    batch_size: int = 8,
    top_k: int = 5,
    streams: str = "both",
    progress: Progress | None = None,
    core: ov.Core | None = None,
) -> dict[str, Any]:
    """The full consistency report (a JSON-able dict) of each compressed IR x device x precision.

    ``reference_logits`` (from a bundle) replace this machine's CPU FP32 reference run as ground
    truth; the local run is still made and its difference reported as ``reference_reproduction``.
    A run's counts are from one stream; ``streams="both"`` adds ``run["throughput"]``: the
    mismatches with the THROUGHPUT hint's streams and how many labels differ from the one-stream
    run. ``images_per_second`` is timed in the THROUGHPUT pass when there is one.
    ``progress(title, total)`` returns a callback advanced by finished samples.
    """
    _check_streams(streams)
    core = core or ov.Core()
    inputs = np.asarray(inputs, dtype=np.float32)
    labels = np.asarray(labels)
    if len(labels) != len(inputs):
        raise DataError(f"--data: {len(inputs)} inputs but {len(labels)} labels")
    models = {f"--reference {reference}": read_classifier(reference, core, "--reference")}
    for path in compressed:
        models[f"--compressed {path}"] = read_classifier(path, core, "--compressed")
    check_compatible(models, inputs.shape[1:])
    status = plan_devices(devices, list(core.available_devices), skip_missing=skip_missing)
    static_shape = [batch_size, *inputs.shape[1:]]

    def run(model: ov.Model, device: str, precision: str | None, title: str,
            throughput: bool = False) -> tuple[Any, np.ndarray, float]:
        compiled = compile_ir(model.clone(), device, precision, core, throughput=throughput, static_shape=static_shape)
        start = time.perf_counter()
        logits = infer_async(compiled, inputs, batch_size, progress(title, len(inputs)) if progress else None)
        return compiled, logits, time.perf_counter() - start

    ref_model = models[f"--reference {reference}"]
    ref_compiled, local_ref, _ = run(ref_model, "CPU", "f32", "reference CPU f32")
    _check_logits(local_ref, len(inputs), f"--reference {reference}")
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "host": platform.node(),
        "openvino": ov.get_version(),
        "reference": {"path": str(reference), "device": "CPU", "precision": ref_compiled.precision,
                      "execution_devices": list(ref_compiled.execution_devices),
                      "streams": ref_compiled.streams, "ground_truth": "stored" if reference_logits is not None else "this machine, CPU f32"},
        "metadata": rt_metadata(ref_model),
        "num_samples": len(inputs),
        "devices": status,
        "runs": [],
    }
    truth = local_ref
    if reference_logits is not None:
        truth = np.asarray(reference_logits, dtype=np.float32)
        _check_logits(truth, len(inputs), "stored reference outputs", local_ref.shape[1])
        report["reference_reproduction"] = {k: v for k, v in consistency(truth, local_ref, labels).items()
                                            if k in ("mismatches", "mismatch_ids", "drift")}
    for path in compressed:
        model = models[f"--compressed {path}"]
        for device, state in status.items():
            for precision in modes_for(device, precisions) if state == "available" else []:
                requested = precision or "default"
                title = f"{Path(path).name} {device} {requested}"
                compiled, logits, seconds = run(model, device, precision, title)
                _check_logits(logits, len(inputs), f"--compressed {path}", truth.shape[1])
                entry = {
                    "model": str(path), "device": device, "requested_precision": requested,
                    "precision": compiled.precision, "execution_devices": list(compiled.execution_devices),
                    "streams": compiled.streams,
                    "images_per_second": len(inputs) / seconds if seconds > 0 else None,
                    **consistency(truth, logits, labels, top_k=top_k),
                }
                if streams == "both":
                    parallel, parallel_logits, seconds = run(model, device, precision, f"{title} THROUGHPUT", True)
                    _check_logits(parallel_logits, len(inputs), f"--compressed {path}", truth.shape[1])
                    entry["images_per_second"] = len(inputs) / seconds if seconds > 0 else None
                    entry["throughput"] = throughput_counts(truth, logits, parallel_logits, parallel.streams)
                report["runs"].append(entry)
    return report


def _check_streams(streams: str) -> None:
    if streams not in STREAM_MODES:
        raise UserError(f"--streams: {streams!r} is not one of {', '.join(STREAM_MODES)}")


def throughput_counts(truth: np.ndarray, one_stream: np.ndarray, parallel: np.ndarray, streams: int) -> dict[str, Any]:
    """The THROUGHPUT pass of a run: its mismatches against ``truth`` and its label changes against one stream."""
    labels = parallel.argmax(1)
    mismatch_ids = np.flatnonzero(labels != truth.argmax(1))
    return {"streams": streams, "mismatches": len(mismatch_ids), "mismatch_ids": mismatch_ids.tolist(),
            "labels_differ_from_one_stream": int((labels != one_stream.argmax(1)).sum())}


def worst_mismatches(run: dict[str, Any]) -> int:
    """The run's mismatches, or its THROUGHPUT pass's if that flipped more."""
    return max(run["mismatches"], run.get("throughput", {}).get("mismatches", 0))


def _check_logits(logits: np.ndarray, n: int, what: str, classes: int | None = None) -> None:
    if logits.ndim != 2 or len(logits) != n or (classes is not None and logits.shape[1] != classes):
        raise DataError(f"{what}: outputs of shape {list(logits.shape)}, expected ({n}, {classes or 'classes'})")


def exceeding(report: dict[str, Any], max_mismatches: int) -> list[dict[str, Any]]:
    """The runs with more than ``max_mismatches`` mismatches with one stream or with THROUGHPUT (the release gate)."""
    return [r for r in report["runs"] if worst_mismatches(r) > max_mismatches]
