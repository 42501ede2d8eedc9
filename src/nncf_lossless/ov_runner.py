"""Running an OpenVINO IR on a device with a stated inference precision.

No torch here: this module ships to device machines on its own. OpenVINO's CPU plugin defaults
to bf16 on CPUs that have it, so an "FP32" run must ask for f32 explicitly; the precision that
actually ran is read back from the compiled model and reported, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov


@dataclass(frozen=True)
class Compiled:
    model: ov.CompiledModel
    device: str
    precision: str  # as the compiled model reports it, e.g. "f32", "bf16"
    execution_devices: tuple[str, ...]


def compile_ir(path: str | Path, device: str = "CPU", precision: str | None = "f32", core: ov.Core | None = None) -> Compiled:
    """Compiles the IR; ``precision=None`` keeps the device default (e.g. bf16 on this CPU).

    With ``"f32"`` the accuracy execution mode is asked for too, so the plugin does not trade
    precision for speed behind the hint's back.
    """
    core = core or ov.Core()
    props: dict[str, str] = {}
    if precision is not None:
        props = {"INFERENCE_PRECISION_HINT": precision}
        if precision == "f32":
            props["EXECUTION_MODE_HINT"] = "ACCURACY"
    compiled = core.compile_model(str(path), device, props)
    return Compiled(
        model=compiled,
        device=device,
        precision=compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
        execution_devices=tuple(compiled.get_property("EXECUTION_DEVICES")),
    )


def infer(compiled: Compiled, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits for ``inputs`` (N, ...), run in batches (a single sample at a time for a static batch of 1)."""
    static_batch = compiled.model.input(0).get_partial_shape()[0]
    if static_batch.is_static:
        batch_size = static_batch.get_length()
    request = compiled.model.create_infer_request()
    outputs = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        if len(chunk) < batch_size and static_batch.is_static:
            pad = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
            outputs.append(request.infer([np.concatenate([chunk, pad])])[0][: len(chunk)].copy())
        else:
            outputs.append(request.infer([chunk])[0].copy())
    return np.concatenate(outputs) if outputs else np.zeros((0,), dtype=np.float32)
