"""Clustering metrics (Hungarian accuracy, NMI, ARI) and a seeded k-means with input checks."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from lowlabel.errors import LowlabelError


def _as_labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise LowlabelError(f"{name} must be a 1-D array of integer ids, got shape {y.shape}")
    return y


def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Best accuracy over one-to-one maps from cluster ids to classes (Hungarian on the contingency table).

    y_true, y_pred: (n,) integer ids (any values). Clusters left unmatched (more clusters than classes) count as
    wrong. Same value as the official munkres-based `cluster_acc`.
    """
    y_true, y_pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise LowlabelError(f"y_true and y_pred need the same non-zero length, got {y_true.size} and {y_pred.size}")
    classes, t = np.unique(y_true, return_inverse=True)
    clusters, p = np.unique(y_pred, return_inverse=True)
    table = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / y_true.size)


def clustering_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """{'acc': Hungarian accuracy, 'nmi': NMI (arithmetic normalisation), 'ari': adjusted Rand index}, in [0, 1]
    (ARI may be negative). y_true, y_pred: (n,) integer ids."""
    acc = cluster_accuracy(y_true, y_pred)
    return {
        "acc": acc,
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
    }


def kmeans(features: np.ndarray, n_clusters: int, *, n_init: int = 10, seed: int = 0) -> np.ndarray:
    """k-means cluster ids (n,) of `features` (n, d) with sklearn's KMeans (k-means++, `n_init` restarts, seeded:
    the official evaluation leaves k-means unseeded)."""
    from sklearn.cluster import KMeans

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] == 0:
        raise LowlabelError(f"k-means needs (n, d) features with n > 0, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise LowlabelError("k-means features contain NaN or inf; check the inputs")
    if not 1 <= n_clusters <= features.shape[0]:
        raise LowlabelError(f"cannot make {n_clusters} clusters of {features.shape[0]} samples; "
                            "ask for between 1 and the number of samples")
    return KMeans(n_clusters, n_init=n_init, random_state=seed).fit_predict(features)
