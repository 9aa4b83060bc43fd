"""The multiview world: two-view digits built like Noisy MNIST, and missing-view masks (serves COMPLETER).

Source: scikit-learn's real handwritten digits (`load_digits`, 1797 images of 8x8, values 0..16, shipped with
scikit-learn). As in Noisy MNIST (Wang et al., "On deep multi-view representation learning", ICML 2015), view 1
of sample i is digit i rotated by an angle uniform in [-max_angle, max_angle]; view 2 is a DIFFERENT digit of the
same class plus independent uniform noise on [0, noise], clipped to [0, 1]. Both views are resampled to
`size` x `size` (bilinear), so each is a (n, size**2) float32 matrix in [0, 1]. See docs/data/multiview.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from lowlabel.errors import LowlabelError
from lowlabel.report.figures import figure, save_figure

_MAX_VIEWS = 30  # the subset code below uses one bit per view


@dataclass
class MultiViewData:
    """n samples seen in several views.

    views: list of float32 (n, d_v) arrays; labels: int64 (n,); sources: int64 (n, n_views), row of the source
    data set (here `load_digits`) that each view of each sample was made from; angles: float32 (n,) rotation of
    view 1 in degrees.
    """

    views: list[np.ndarray]
    labels: np.ndarray
    sources: np.ndarray
    angles: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _resample(images: np.ndarray, size: int, angles_deg: np.ndarray) -> np.ndarray:
    """Resample each (h, w) image of `images` (n, h, w) to (size, size), rotated counter-clockwise by its angle
    about the centre; bilinear, zero outside. One map_coordinates call for the whole batch -> (n, size, size)."""
    n, h, w = images.shape
    r, c = np.meshgrid((np.arange(size) - (size - 1) / 2) * (h / size),
                       (np.arange(size) - (size - 1) / 2) * (w / size), indexing="ij")  # in input pixel units
    theta = np.deg2rad(angles_deg)[:, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    # Output pixel (r, c) shows the input at (r, c) rotated back (rows point down, so this turns the content
    # counter-clockwise on screen for a positive angle).
    src_r = cos * r + sin * c + (h - 1) / 2
    src_c = -sin * r + cos * c + (w - 1) / 2
    idx = np.broadcast_to(np.arange(n, dtype=float)[:, None, None], src_r.shape)
    return ndimage.map_coordinates(images, [idx, src_r, src_c], order=1, mode="grid-constant", cval=0.0)


def _same_class_partner(rng: np.random.Generator, labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each row index in `rows`, a uniformly random OTHER row of `labels` with the same label (vectorised)."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - starts[labels[order]]
    y = labels[rows]  # every class needs two or more members (the digits have 174 to 183)
    shift = 1 + rng.integers(0, counts[y] - 1)  # 1 .. count-1: never the sample itself
    return order[starts[y] + (rank[rows] + shift) % counts[y]]


def two_view_digits(
    seed: int = 0, n: int | None = None, *, size: int = 16, max_angle: float = 45.0, noise: float = 1.0
) -> MultiViewData:
    """Two views of sklearn digits, Noisy-MNIST style: views[0] rotated digit, views[1] noisy other same-class digit.

    Returns MultiViewData with views (n, size*size) float32 in [0, 1] each. n=None: all 1797 digits in data set
    order; otherwise a seeded random subset of n digits, sorted by data set row. Defaults follow Noisy MNIST:
    angles uniform in [-45, 45] degrees, noise uniform on [0, 1] added per pixel then clipped to [0, 1].
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float64)
    labels = digits.target.astype(np.int64)
    total = len(labels)
    if n is not None and not 1 <= n <= total:
        raise LowlabelError(f"two_view_digits n={n}: must be between 1 and {total} (or None for all)")
    if size < 2 or max_angle < 0 or noise < 0:
        raise LowlabelError(f"two_view_digits: size={size} (>= 2), max_angle={max_angle}, noise={noise} (>= 0)")
    rng = np.random.default_rng(seed)
    rows = np.arange(total) if n is None else np.sort(rng.choice(total, size=n, replace=False))
    partners = _same_class_partner(rng, labels, rows)
    angles = rng.uniform(-max_angle, max_angle, size=len(rows))
    view1 = _resample(images[rows], size, angles)
    view2 = _resample(images[partners], size, np.zeros(len(rows)))
    view2 = np.clip(view2 + rng.uniform(0.0, noise, size=view2.shape), 0.0, 1.0)
    return MultiViewData(
        views=[v.reshape(len(rows), -1).astype(np.float32) for v in (np.clip(view1, 0.0, 1.0), view2)],
        labels=labels[rows],
        sources=np.stack([rows, partners], axis=1).astype(np.int64),
        angles=angles.astype(np.float32),
    )


def missing_view_mask(n: int, n_views: int, missing_rate: float, seed: int) -> np.ndarray:
    """Which views each sample has: int64 (n, n_views) of 0/1, every row with at least one 1.

    Paper definition (COMPLETER, missing rate eta = (n - m) / n, m = samples with all views): exactly
    round(eta * n) rows (round half up) are incomplete, chosen by a seeded permutation; each drops a uniformly
    random non-empty proper subset of its views (two views: one of the two, each with probability 1/2).
    Deviation from the official `get_mask`: that draws the mask with the global NumPy state and a rejection loop
    until the mean of the mask is within 0.005 of 1 - eta / n_views. For two views this has the same expected
    statistics; for three or more its fraction of complete rows is not 1 - eta (about 0.56 at eta = 0.5, 3 views).
    Here the complete fraction is exactly 1 - round(eta * n) / n for any number of views, and the seed is explicit.
    """
    if int(n) != n or n < 1 or int(n_views) != n_views or not 1 <= n_views <= _MAX_VIEWS:
        raise LowlabelError(f"missing_view_mask: n={n} must be >= 1 and n_views={n_views} in 1..{_MAX_VIEWS}")
    if not 0 <= missing_rate < 1:
        raise LowlabelError(
            f"missing_view_mask: missing_rate={missing_rate} must be in [0, 1) (1 would leave no complete sample)"
        )
    if n_views == 1 and missing_rate != 0:
        raise LowlabelError(f"missing_view_mask: with one view only missing_rate=0 is possible, got {missing_rate}")
    n, n_views = int(n), int(n_views)
    rng = np.random.default_rng(seed)
    n_missing = int(np.floor(missing_rate * n + 0.5))
    rows = rng.permutation(n)[:n_missing]
    dropped = rng.integers(1, 2**n_views - 1, size=n_missing)  # bit v set = view v missing; never 0 or all
    mask = np.ones((n, n_views), dtype=np.int64)
    mask[rows] = 1 - ((dropped[:, None] >> np.arange(n_views)) & 1)
    return mask


class MultiViewDataset(Dataset):
    """Torch view: item i = {'views': [float32 (d_v,) per view, zeroed where missing], 'mask': int64 (n_views,),
    'label': int64 scalar, 'index': i}. Zeroing missing views follows the official code (X^v <- X^v * M[:, v])."""

    def __init__(self, data: MultiViewData, mask: np.ndarray | None = None) -> None:
        n, n_views = len(data), len(data.views)
        if mask is None:
            mask = np.ones((n, n_views), dtype=np.int64)
        if mask.shape != (n, n_views) or (mask.sum(axis=1) < 1).any():
            raise LowlabelError(f"mask of shape {mask.shape}: need ({n}, {n_views}) with at least one view per row")
        self.views = [torch.from_numpy(v * mask[:, k : k + 1].astype(np.float32)) for k, v in enumerate(data.views)]
        self.mask = torch.from_numpy(np.asarray(mask, dtype=np.int64))
        self.labels = torch.from_numpy(data.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, object]:
        return {"views": [v[index] for v in self.views], "mask": self.mask[index], "label": self.labels[index],
                "index": index}


def preview(n: int, out: Path, seed: int = 0) -> Path:
    """PNG of `n` two-view samples: view 1 (rotated) and view 2 (other sample, noisy) side by side, with labels."""

    if n < 1:
        raise LowlabelError(f"preview n={n}: need at least one sample")
    data = two_view_digits(seed=seed, n=n)
    side = round(np.sqrt(data.views[0].shape[1]))
    cols = min(n, 6)
    rows = -(-n // cols)
    fig, axes = figure(rows, 2 * cols, figsize=(2.4 * cols, 1.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        src = data.sources[i]
        for v in range(2):
            ax = axes[r, 2 * c + v]
            ax.imshow(data.views[v][i].reshape(side, side), cmap="gray", vmin=0, vmax=1)
            title = f"y={data.labels[i]} #{src[0]} {data.angles[i]:+.0f}°" if v == 0 else f"view 2: #{src[1]}"
            ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, dpi=90)
