"""Figures of a COMPLETER run: a t-SNE map of the fused latents and a missing-rate sweep curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lowlabel.report.figures import figure, save_figure


def plot_latents(embedding: np.ndarray, clusters: np.ndarray, path: Path, *, title: str = "",
                 max_points: int = 3000, seed: int = 0, projection: str = "tsne") -> Path:
    """2-D view of `embedding` (n, d) coloured by cluster id (n,), on at most `max_points` random samples:
    t-SNE, or PCA (instant; what a training run writes, since t-SNE can take a minute on a busy CPU)."""
    rng = np.random.default_rng(seed)
    pick = rng.permutation(embedding.shape[0])[:max_points]
    chosen = embedding[pick].astype(np.float64)
    if projection == "pca":
        centred = chosen - chosen.mean(0)
        points = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    else:
        from sklearn.manifold import TSNE

        points = TSNE(n_components=2, init="pca", random_state=seed,
                      perplexity=min(30.0, max(2.0, (pick.size - 1) / 3))).fit_transform(chosen)
    fig, ax = figure(figsize=(6, 6))
    ax.scatter(points[:, 0], points[:, 1], c=clusters[pick], cmap="tab20", s=4)
    ax.set_title(title or f"fused latents ({'PCA' if projection == 'pca' else 't-SNE'}), coloured by k-means cluster")
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_sweep(rates: Sequence[float], scores: Mapping[str, Sequence[tuple[float, float]]], path: Path,
               *, title: str = "") -> Path:
    """Metric vs missing rate: `scores[metric]` holds (mean, std) per rate."""
    fig, ax = figure(figsize=(6, 4))
    for metric, values in scores.items():
        mean = np.array([m for m, _ in values])
        std = np.array([s for _, s in values])
        ax.errorbar(rates, mean, yerr=std, marker="o", capsize=3, label=metric)
    ax.set_xlabel("missing rate")
    ax.set_ylabel("score")
    ax.set_title(title or "COMPLETER vs missing rate")
    ax.legend()
    return save_figure(fig, path, dpi=120, bbox_inches="tight")
