"""Running an OpenVINO IR on a device with a stated inference precision.

No torch here, and only relative imports: this module is copied into portable bundles that run
where nothing but ``openvino`` and ``numpy`` is installed. OpenVINO's CPU plugin defaults to bf16
on CPUs that have it, so an "FP32" run must ask for f32 explicitly; the precision that actually
ran is read back from the compiled model and reported, never assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov

# Precision modes per device family (None = the plugin's default). NPU takes no precision hint.
PRECISION_MODES: dict[str, tuple[str | None, ...]] = {"CPU": ("f32", None), "GPU": (None, "f32"), "NPU": (None,)}
KNOWN_DEVICES = ("CPU", "GPU", "NPU")


@dataclass(frozen=True)
class Compiled:
    model: ov.CompiledModel
    device: str
    precision: str  # as the compiled model reports it, e.g. "f32", "bf16"; "unknown" if it won't say
    execution_devices: tuple[str, ...]
    streams: int  # parallel streams the plugin set up; 0 if it won't say


def device_family(device: str) -> str:
    """``"GPU.1"`` -> ``"GPU"``."""
    return device.split(".")[0].upper()


def precision_modes(device: str) -> tuple[str | None, ...]:
    return PRECISION_MODES.get(device_family(device), (None,))


def available_devices(core: ov.Core | None = None) -> list[str]:
    return list((core or ov.Core()).available_devices)


def compile_ir(
    path: str | Path | ov.Model,
    device: str = "CPU",
    precision: str | None = "f32",
    core: ov.Core | None = None,
    *,
    throughput: bool = False,
    static_shape: Sequence[int] | None = None,
) -> Compiled:
    """Compiles the IR; ``precision=None`` keeps the device default (e.g. bf16 on this CPU).

    With ``"f32"`` the accuracy execution mode is asked for too, so the plugin does not trade
    precision for speed behind the hint's back. ``throughput`` sets the THROUGHPUT performance
    hint (several streams of parallel requests), else the LATENCY hint (one stream). The two
    should compute the same labels, and the checker counts both because they need not: OpenVINO
    2026.4 CPU gave a 4-bit IR different, wrong labels with two streams
    (``bench/repro_openvino_streams.py``). NPU never gets a precision hint and compiles only
    static shapes: it is reshaped to ``static_shape``.
    """
    core = core or ov.Core()
    model = path if isinstance(path, ov.Model) else core.read_model(str(path))
    props: dict[str, str] = {"PERFORMANCE_HINT": "THROUGHPUT" if throughput else "LATENCY"}
    if device_family(device) == "NPU":
        precision = None
        if static_shape is not None and model.input(0).get_partial_shape().is_dynamic:
            model.reshape({0: ov.PartialShape(list(static_shape))})
    if precision is not None:
        props["INFERENCE_PRECISION_HINT"] = precision
        if precision == "f32":
            props["EXECUTION_MODE_HINT"] = "ACCURACY"
    compiled = core.compile_model(model, device, props)
    return Compiled(
        model=compiled,
        device=device,
        precision=_read_precision(compiled),
        execution_devices=tuple(compiled.get_property("EXECUTION_DEVICES")),
        streams=_read_int(compiled, "NUM_STREAMS"),
    )


def _read_int(compiled: ov.CompiledModel, key: str) -> int:
    try:
        return int(compiled.get_property(key))
    except (RuntimeError, TypeError, ValueError):  # not every plugin exposes every property
        return 0


def _read_precision(compiled: ov.CompiledModel) -> str:
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except RuntimeError:  # some plugins (NPU) do not expose the property
        return "unknown"
    return value.to_string() if hasattr(value, "to_string") else str(value)


def _chunks(compiled: Compiled, inputs: np.ndarray, batch_size: int) -> tuple[int, list[tuple[np.ndarray, int]]]:
    """Batches of ``inputs`` with their real sizes; a static batch dimension is padded with zeros."""
    static_batch = compiled.model.input(0).get_partial_shape()[0]
    if static_batch.is_static:
        batch_size = static_batch.get_length()
    chunks = []
    for start in range(0, len(inputs), batch_size):
        chunk = np.ascontiguousarray(inputs[start : start + batch_size])
        n = len(chunk)
        if n < batch_size and static_batch.is_static:
            chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]), dtype=chunk.dtype)])
        chunks.append((chunk, n))
    return batch_size, chunks


def infer(compiled: Compiled, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits for ``inputs`` (N, ...), run synchronously in batches."""
    _, chunks = _chunks(compiled, inputs, batch_size)
    request = compiled.model.create_infer_request()
    outputs = [request.infer([chunk])[0][:n].copy() for chunk, n in chunks]
    return np.concatenate(outputs) if outputs else np.zeros((0,), dtype=np.float32)


def infer_async(
    compiled: Compiled,
    inputs: np.ndarray,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The same logits as :func:`infer`, from an ``AsyncInferQueue`` of the device's optimal size.

    ``progress(n)`` is called from the calling thread with the number of newly finished samples.
    """
    _, chunks = _chunks(compiled, inputs, batch_size)
    outputs: list[np.ndarray | None] = [None] * len(chunks)
    # No Python callback: OpenVINO would run it on its own threads under the GIL, and that
    # deadlocks with a compiled model being freed on the main thread. The queue's own (C++)
    # callbacks track idle requests; a request's output is collected before it is reused.
    queue = ov.AsyncInferQueue(compiled.model, 0)
    pending: dict[int, int] = {}  # request id -> chunk index it is running

    def collect(request_id: int) -> None:
        index = pending.pop(request_id, None)
        if index is not None:
            outputs[index] = queue[request_id].get_output_tensor(0).data[: chunks[index][1]].copy()
            if progress is not None:
                progress(chunks[index][1])

    for index, (chunk, _) in enumerate(chunks):
        request_id = queue.get_idle_request_id()
        collect(request_id)
        queue.start_async({0: chunk}, index)
        pending[request_id] = index
    queue.wait_all()
    for request_id in list(pending):
        collect(request_id)
    return np.concatenate(outputs) if outputs else np.zeros((0,), dtype=np.float32)
