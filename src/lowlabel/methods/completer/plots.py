"""Figures of a COMPLETER run: a map of the fused latents, where the imputed latents land, and a missing-rate sweep
curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lowlabel.report.figures import figure, save_figure


def _pca2(points: np.ndarray) -> np.ndarray:
    """The first two principal-component coordinates of the rows of `points` (n, d)."""
    centred = points.astype(np.float64) - points.mean(0)
    return centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T


def plot_latents(embedding: np.ndarray, clusters: np.ndarray, path: Path, *, title: str = "",
                 max_points: int = 3000, seed: int = 0, projection: str = "tsne") -> Path:
    """2-D view of `embedding` (n, d) coloured by cluster id (n,), on at most `max_points` random samples:
    t-SNE, or PCA (instant; what a training run writes, since t-SNE can take a minute on a busy CPU)."""
    rng = np.random.default_rng(seed)
    pick = rng.permutation(embedding.shape[0])[:max_points]
    chosen = embedding[pick].astype(np.float64)
    if projection == "pca":
        points = _pca2(chosen)
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


def plot_imputation(embedding: np.ndarray, mask: np.ndarray, clusters: np.ndarray, path: Path, *,
                    title: str = "", max_points: int = 3000, seed: int = 0) -> Path:
    """Where the imputed latents land: one panel per view (at most 4) with a missing sample, the PCA of that view's
    latent block of `embedding` (n, V * d_z, as `Completer.embed` returns it), encoded latents of the samples that
    have the view as dots and the latents predicted from the other views (mask (n, V) == 0) as crosses, both
    coloured by cluster id (n,); on at most `max_points` random samples."""
    n_views = mask.shape[1]
    d_z = embedding.shape[1] // n_views
    pick = np.random.default_rng(seed).permutation(embedding.shape[0])[:max_points]
    shown = [v for v in range(n_views) if not mask[pick, v].all()][:4] or [0]
    fig, axes = figure(ncols=len(shown), figsize=(5 * len(shown), 5), squeeze=False)
    for ax, v in zip(axes[0], shown, strict=True):
        points = _pca2(embedding[pick, v * d_z : (v + 1) * d_z])
        imputed = mask[pick, v] == 0
        ax.scatter(*points[~imputed].T, c=clusters[pick][~imputed], cmap="tab20", s=4, vmin=0,
                   vmax=max(int(clusters.max()), 1), label=f"encoded ({int((~imputed).sum())})")
        ax.scatter(*points[imputed].T, c=clusters[pick][imputed], cmap="tab20", s=14, marker="x", linewidths=0.8,
                   vmin=0, vmax=max(int(clusters.max()), 1), label=f"imputed ({int(imputed.sum())})")
        ax.set_title(f"view {v + 1} latents (PCA)")
        ax.set_xticks([])
        ax.set_yticks([])
        for handle in ax.legend(fontsize=8, loc="best").legend_handles:  # marker shape only, not a cluster's colour
            handle.set_color("0.3")
    fig.suptitle(title or "imputed latents (x) among encoded ones (.), coloured by k-means cluster")
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
