"""Label consistency of a compressed IR against its reference IR on OpenVINO devices.

No torch and no training code: this module runs wherever ``openvino`` and ``numpy`` do. The
reference always runs in true FP32; the compressed IR runs at each requested precision
(``None`` = the device default), and the report states the precision that actually ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from nncf_lossless.metrics import compare
from nncf_lossless.ov_runner import compile_ir, infer


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
) -> list[dict[str, Any]]:
    """One report per precision: accuracies, mismatches against the reference IR, flip matrix.

    ``source_logits`` (reference, compressed), from the framework the IRs were exported from, adds
    ``source_vs_ir``: how many top-1 labels each IR changed against its source, and the logit drift.
    """
    core = ov.Core()
    reference = compile_ir(reference_xml, device, "f32", core)
    ref_logits = infer(reference, inputs, batch_size)
    reports = []
    for precision in precisions:
        compressed = compile_ir(compressed_xml, device, precision, core)
        comp_logits = infer(compressed, inputs, batch_size)
        report = compare(ref_logits, comp_logits, labels)
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
