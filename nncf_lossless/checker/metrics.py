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


def consistency(reference_logits: np.ndarray, compressed_logits: np.ndarray, labels: np.ndarray, *,
                top_k: int = 5, margin_bins: int = 20) -> dict[str, Any]:
    """:func:`compare` plus top-k agreement, one record per flipped sample, output drift and margins.

    - ``top_k``: ``reference_top1_in_compressed_topk`` (fraction of samples whose reference label
      is among the compressed model's top k) and ``mean_topk_overlap`` (|top-k ∩ top-k| / k).
    - ``flips``: per mismatch, the sample id, its label, both top-1 classes and both margins:
      ``reference_margin`` = how far the reference preferred its class over the compressed one
      (reference logits), ``compressed_margin`` = the same the other way round (compressed logits).
    - ``margin_histogram``: the reference's top-1 margin of flipped vs kept samples, shared bins.
    """
    ref_logits = np.asarray(reference_logits, dtype=np.float64)
    comp_logits = np.asarray(compressed_logits, dtype=np.float64)
    report = compare(ref_logits, comp_logits, labels)
    labels = np.asarray(labels)
    ref, comp = ref_logits.argmax(1), comp_logits.argmax(1)
    k = max(1, min(top_k, ref_logits.shape[1]))
    ref_topk = np.argsort(-ref_logits, axis=1, kind="stable")[:, :k]
    comp_topk = np.argsort(-comp_logits, axis=1, kind="stable")[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(ref_topk.tolist(), comp_topk.tolist())]
    n = len(ref)
    report["top_k"] = {
        "k": k,
        "reference_top1_in_compressed_topk": float(np.mean((comp_topk == ref[:, None]).any(1))) if n else 1.0,
        "mean_topk_overlap": float(np.mean(overlap)) if n else 1.0,
    }
    rows = np.arange(n)
    ref_margin = ref_logits[rows, ref] - ref_logits[rows, comp]
    comp_margin = comp_logits[rows, comp] - comp_logits[rows, ref]
    report["flips"] = [
        {"id": int(i), "label": int(labels[i]), "reference": int(ref[i]), "compressed": int(comp[i]),
         "reference_margin": float(ref_margin[i]), "compressed_margin": float(comp_margin[i])}
        for i in report["mismatch_ids"]
    ]
    diff = np.abs(ref_logits - comp_logits)
    report["drift"] = {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
                       "mean_abs_diff": float(diff.mean()) if diff.size else 0.0}
    margins = top1_margin(ref_logits) if n else np.zeros(0)
    flipped = ref != comp
    edges = np.histogram_bin_edges(margins, bins=margin_bins) if n else np.linspace(0, 1, margin_bins + 1)
    report["margin_histogram"] = {
        "bin_edges": edges.tolist(),
        "flipped": np.histogram(margins[flipped], bins=edges)[0].tolist(),
        "kept": np.histogram(margins[~flipped], bins=edges)[0].tolist(),
    }
    return report
