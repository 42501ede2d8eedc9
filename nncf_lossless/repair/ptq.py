"""The PTQ path: NNCF's own ``quantize_with_accuracy_control`` on the FP32 reference IR, driven by label agreement.

For users who have the FP32 IR and data but no compressed IR yet: NNCF quantizes (INT8 PTQ) and
its accuracy control reverts quantizer groups until the label-agreement drop is within the
budget. The validation function follows NNCF's per-sample contract with one sample per item:
it returns the agreement rate and, per item, 1.0 or 0.0 (top-1 equals the reference's f32 label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from nncf_lossless.checker.core import read_classifier
from nncf_lossless.checker.errors import DataError
from nncf_lossless.checker.ov_runner import compile_ir, infer

from .search import label_agreement


def quantize_with_label_control(
    reference: str | Path,
    calibration: np.ndarray,
    validation: np.ndarray,
    *,
    max_mismatches: int,
    subset_size: int = 300,
    preset: str = "performance",
    **advanced: Any,
) -> ov.Model:
    """INT8 PTQ of the reference IR with at most ``max_mismatches`` validation labels changed (if NNCF gets there).

    ``advanced`` goes to ``nncf.quantize_with_accuracy_control`` (e.g. ``max_num_iterations``).
    """
    import nncf

    if max_mismatches < 0:
        raise DataError(f"--max-mismatches: must be >= 0, got {max_mismatches}")
    core = ov.Core()
    model = read_classifier(reference, core, "--reference")
    ref_logits = infer(compile_ir(model.clone(), "CPU", "f32", core), validation)

    def validate(compiled: ov.CompiledModel, items: Any) -> tuple[float, list[float]]:
        # NNCF's ranker passes a subset of the items: each carries its index into the reference labels.
        items = list(items)
        request = compiled.create_infer_request()
        logits = np.concatenate([request.infer([x])[0] for x, _ in items])
        return label_agreement(ref_logits[[i for _, i in items]])(logits)

    items = [(validation[i : i + 1], i) for i in range(len(validation))]
    # NNCF's absolute drop; half a sample of slack so N mismatches are never lost to float rounding.
    max_drop = (max_mismatches + 0.5) / len(validation)
    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))]),
        nncf.Dataset(items, lambda item: item[0]),
        validation_fn=validate,
        max_drop=max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        preset=nncf.QuantizationPreset(preset),
        subset_size=subset_size,
        **advanced,
    )
