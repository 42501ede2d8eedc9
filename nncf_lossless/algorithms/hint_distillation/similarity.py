"""Representational similarity between layers: linear CKA, RBF CKA and CCA R².

Each function takes two feature matrices of the same N samples (N x C1, N x C2; the channel
counts may differ) and returns a similarity in [0, 1]. All three are invariant to orthogonal
transforms and isotropic scaling of either matrix, so they compare what two layers represent, not
how their channels happen to be ordered or scaled (Kornblith et al., ICML 2019). Pure NumPy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

METRICS = ("linear_cka", "rbf_cka", "cca")


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA: ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), on column-centred features."""
    x, y = _centred(x), _centred(y)
    cross = np.linalg.norm(y.T @ x) ** 2
    norm = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norm) if norm > 0 else 0.0


def rbf_cka(x: np.ndarray, y: np.ndarray, sigma: float = 0.8) -> float:
    """CKA with RBF kernels whose bandwidth is ``sigma`` times the median pairwise distance."""
    kx, ky = _centred_gram(_rbf_gram(x, sigma)), _centred_gram(_rbf_gram(y, sigma))
    norm = np.linalg.norm(kx) * np.linalg.norm(ky)
    return float((kx * ky).sum() / norm) if norm > 0 else 0.0


def cca_r2(x: np.ndarray, y: np.ndarray, energy: float = 0.99) -> float:
    """Mean squared canonical correlation (CCA R²) between the two feature sets.

    Each side is first reduced to the principal directions holding ``energy`` of its variance (as
    SVCCA does), which keeps the estimate stable when channels outnumber or nearly repeat samples.
    """
    qx, qy = _orthonormal_basis(_centred(x), energy), _orthonormal_basis(_centred(y), energy)
    if qx.shape[1] == 0 or qy.shape[1] == 0:
        return 0.0
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return float(np.mean(np.clip(rho, 0.0, 1.0) ** 2))


SIMILARITY: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "linear_cka": linear_cka, "rbf_cka": rbf_cka, "cca": cca_r2}


def distance_matrix(features: Sequence[np.ndarray], metric: str = "linear_cka") -> np.ndarray:
    """L x L matrix of ``1 - similarity`` between every pair of layers (symmetric, zero diagonal)."""
    if metric not in SIMILARITY:
        raise ValueError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")
    sim = SIMILARITY[metric]
    n = len(features)
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = 1.0 - sim(features[i], features[j])
    return np.clip(dist, 0.0, 1.0)


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x - x.mean(axis=0, keepdims=True)


def _centred_gram(k: np.ndarray) -> np.ndarray:
    return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def _rbf_gram(x: np.ndarray, sigma: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    sq = (x * x).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    median = np.median(np.sqrt(d2[np.triu_indices(len(x), 1)])) if len(x) > 1 else 0.0
    if median == 0:
        return np.ones_like(d2)
    return np.exp(-d2 / (2 * (sigma * median) ** 2))


def _orthonormal_basis(x: np.ndarray, energy: float) -> np.ndarray:
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return u[:, :0]
    kept = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), energy) + 1)
    return u[:, : min(kept, int((s > s[0] * 1e-10).sum()))]
