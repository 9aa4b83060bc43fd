"""Baselines COMPLETER is compared with on incomplete two-view data, each returning cluster ids (n,).

- k-means on the concatenated views, missing views zero-filled (the official code's input) or mean-imputed, raw or
  with every view standardised (z-scores over the samples that have it, each view scaled to equal total variance);
- spectral clustering (k-nearest-neighbour graph) on the standardised, mean-imputed concatenation;
- CCA + k-means, the linear counterpart of COMPLETER: regularised CCA fitted on the complete pairs, a missing view's
  canonical variates predicted from the present view's (v̂ = ρ ⊙ u, the least-squares prediction between canonical
  pairs), k-means on the concatenated canonical variates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lowlabel.errors import LowlabelError
from lowlabel.metrics.clustering import kmeans


def zero_fill(views: Sequence[np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
    """Views (n, d_v) with the rows of missing views set to 0. mask: (n, V) 0/1."""
    keep = np.asarray(mask).astype(bool)
    return [np.where(keep[:, v : v + 1], x, 0.0) for v, x in enumerate(views)]


def mean_impute(views: Sequence[np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
    """Views with the rows of missing views set to the view's mean over the samples that have it."""
    keep = np.asarray(mask).astype(bool)
    return [np.where(keep[:, v : v + 1], x, x[keep[:, v]].mean(axis=0, keepdims=True)) for v, x in enumerate(views)]


def standardise(views: Sequence[np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
    """Per view: z-scores over the samples that have it (constant features left at 0), missing rows at 0 (the
    mean), divided by sqrt(d_v) so that every view carries the same total variance in a concatenation."""
    keep = np.asarray(mask).astype(bool)
    out = []
    for v, x in enumerate(views):
        seen = x[keep[:, v]]
        std = seen.std(axis=0)
        z = (x - seen.mean(axis=0)) / np.where(std > 0, std, 1.0)
        out.append(np.where(keep[:, v : v + 1], z, 0.0) / np.sqrt(x.shape[1]))
    return out


def kmeans_concat(views: Sequence[np.ndarray], mask: np.ndarray, n_clusters: int, *, fill: str = "mean",
                  n_init: int = 10, seed: int = 0) -> np.ndarray:
    """k-means on the concatenated views, missing views filled by `fill`: 'zero', 'mean' or 'standardised'."""
    filled = {"zero": zero_fill, "mean": mean_impute, "standardised": standardise}[fill](views, mask)
    return kmeans(np.hstack(filled), n_clusters, n_init=n_init, seed=seed)


def spectral_concat(views: Sequence[np.ndarray], mask: np.ndarray, n_clusters: int, *, n_neighbors: int = 10,
                    seed: int = 0) -> np.ndarray:
    """Spectral clustering (symmetrised k-NN graph of `n_neighbors`, k-means on the spectral embedding) of the
    standardised, mean-imputed concatenation."""
    from sklearn.cluster import SpectralClustering

    features = np.hstack(standardise(views, mask))
    return SpectralClustering(n_clusters, affinity="nearest_neighbors", n_neighbors=n_neighbors,
                              assign_labels="kmeans", random_state=seed).fit_predict(features)


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    return (vectors / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T


def cca(x: np.ndarray, y: np.ndarray, n_components: int, reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regularised CCA of paired rows x (m, d1), y (m, d2): projections A (d1, c), B (d2, c) of the centred views
    and the canonical correlations ρ (c,), descending. Each covariance gets `reg` × its mean variance on the
    diagonal (ridge), so the whitening exists when d > m or features are constant."""
    if x.shape[0] < 2:
        raise LowlabelError(f"CCA needs at least 2 complete pairs, got {x.shape[0]}")
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    m = x.shape[0] - 1

    def ridge(cov: np.ndarray) -> np.ndarray:
        return cov + reg * max(float(np.trace(cov)) / cov.shape[0], 1e-12) * np.eye(cov.shape[0])

    wx, wy = _inverse_sqrt(ridge(xc.T @ xc / m)), _inverse_sqrt(ridge(yc.T @ yc / m))
    u, rho, vt = np.linalg.svd(wx @ (xc.T @ yc / m) @ wy)
    c = min(n_components, rho.size)
    return wx @ u[:, :c], wy @ vt[:c].T, rho[:c]


def cca_kmeans(views: Sequence[np.ndarray], mask: np.ndarray, n_clusters: int, *, n_components: int = 16,
               reg: float = 0.1, n_init: int = 10, seed: int = 0) -> np.ndarray:
    """k-means on [u, v], the canonical variates of both views (CCA fitted on the complete pairs), a missing view's
    variates predicted from the other's: v̂ = ρ ⊙ u, û = ρ ⊙ v. Two views only."""
    if len(views) != 2:
        raise LowlabelError(f"the CCA baseline takes two views, got {len(views)}")
    keep = np.asarray(mask).astype(bool)
    both = keep.all(axis=1)
    x, y = (np.asarray(v, dtype=np.float64) for v in views)
    a, b, rho = cca(x[both], y[both], n_components, reg)
    u, v = (x - x[both].mean(axis=0)) @ a, (y - y[both].mean(axis=0)) @ b
    u = np.where(keep[:, :1], u, rho * v)
    v = np.where(keep[:, 1:], v, rho * u)
    return kmeans(np.hstack([u, v]), n_clusters, n_init=n_init, seed=seed)
