"""Agreement between a compressed model and its reference, from their logits.

NumPy only (no torch), so the same numbers come out of the trainer and the device-side checker.
A *mismatch* is a sample whose compressed top-1 class differs from the reference's top-1 class,
whatever the ground truth says.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def compare(reference_logits: np.ndarray, compressed_logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracies of both models, mismatches and the reference-vs-compressed flip matrix.

    ``flip_matrix[i][j]`` counts samples the reference puts in class ``i`` and the compressed
    model in class ``j``; off-diagonal entries are mismatches.
    """
    ref_logits = np.asarray(reference_logits)
    comp_logits = np.asarray(compressed_logits)
    labels = np.asarray(labels)
    if ref_logits.shape != comp_logits.shape or ref_logits.ndim != 2 or len(labels) != len(ref_logits):
        raise ValueError(
            f"logit shapes {ref_logits.shape} and {comp_logits.shape} and label count {len(labels)} do not match"
        )
    ref, comp = ref_logits.argmax(1), comp_logits.argmax(1)
    num_classes = ref_logits.shape[1]
    flips = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(flips, (ref, comp), 1)
    mismatch = ref != comp
    return {
        "num_samples": len(labels),
        "reference": {"accuracy": float(np.mean(ref == labels)) if len(labels) else 0.0},
        "compressed": {"accuracy": float(np.mean(comp == labels)) if len(labels) else 0.0},
        "mismatches": int(mismatch.sum()),
        "mismatches_reference_correct": int((mismatch & (ref == labels)).sum()),
        "mismatch_ids": np.flatnonzero(mismatch).tolist(),
        "flip_matrix": flips.tolist(),
    }


def top1_margin(logits: np.ndarray) -> np.ndarray:
    """Gap between the top-1 and the runner-up logit per sample: small margins are near-ties."""
    top2 = np.sort(np.asarray(logits), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]
