"""IR-in-the-loop evaluation: mismatches measured on the exported IRs, as they will ship.

PyTorch fake quantization and OpenVINO's FakeQuantize round a few values differently (float
accumulation order), so a checkpoint's PyTorch-measured mismatches are not exactly what the
device shows. The trainer can export each evaluated checkpoint and count mismatches on OpenVINO
CPU in true f32: the compressed IR against the reference IR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nncf_lossless.checker.metrics import compare
from nncf_lossless.checker.ov_runner import compile_ir, infer
from nncf_lossless.controller import CompressionController


def evaluate_on_ir(ctrl: CompressionController, workdir: Path, inputs: np.ndarray, labels: np.ndarray,
                   reference_logits: np.ndarray | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Exports ``ctrl``'s IR pair into ``workdir`` and compares them on OpenVINO CPU (f32).

    ``reference_logits`` (the reference IR's outputs from an earlier call) skips re-running the
    reference, which does not change during fine-tuning. Returns the metrics and those logits.
    """
    paths = ctrl.export(workdir)
    if reference_logits is None:
        reference_logits = infer(compile_ir(paths["reference"], "CPU", "f32"), inputs)
    compressed = infer(compile_ir(paths["compressed"], "CPU", "f32"), inputs)
    return compare(reference_logits, compressed, labels), reference_logits
