"""COMPLETER's data: the official .mat layouts (Scene-15, LandUse-21, Caltech101-20, NoisyMNIST), checks of
multi-view inputs and missing-view masks, and the adapter to the synthetic two-view digits world."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lowlabel.errors import LowlabelError

# Official per-dataset settings (configure.py): latent size and model seed.
LAYOUTS: dict[str, dict[str, int]] = {
    "scene15": {"d_z": 128, "seed": 8},
    "landuse21": {"d_z": 64, "seed": 3},
    "caltech101_20": {"d_z": 128, "seed": 4},
    "noisymnist": {"d_z": 64, "seed": 0},
}
OTHER_DATA = {"d_z": 32, "seed": 0}  # the same settings for data of no official layout (digits world, your own)
_NAME_PATTERNS = {
    "scene15": r"scene[-_]?15",
    "landuse21": r"landuse[-_]?21",
    "caltech101_20": r"caltech101[-_]?20",
    "noisymnist": r"noisy[-_]?mnist",
}


@dataclass
class MultiView:
    """Views (n, d_v) float32, one per view, and labels (n,) int64 starting at 0."""

    views: list[np.ndarray]
    labels: np.ndarray
    name: str = ""

    @property
    def n_clusters(self) -> int:
        return int(np.unique(self.labels).size)


def check_views(views: Sequence[np.ndarray], labels: np.ndarray | None = None, *, source: str = "input") -> None:
    """Raise LowlabelError unless `views` are >= 2 finite 2-D arrays with the same, non-zero number of rows
    (and `labels`, if given, one per row)."""
    if len(views) < 2:
        raise LowlabelError(f"{source}: COMPLETER needs at least two views, got {len(views)}")
    for v, x in enumerate(views):
        if x.ndim != 2:
            raise LowlabelError(f"{source}: view {v} must be a 2-D (samples, features) array, got shape {x.shape}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise LowlabelError(f"{source}: view {v} has shape {x.shape}: it needs at least one row and one column")
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).any(axis=1).sum())
            raise LowlabelError(f"{source}: view {v} has NaN or inf in {bad} row(s); impute or drop them first")
    counts = [x.shape[0] for x in views]
    if len(set(counts)) != 1:
        raise LowlabelError(f"{source}: views disagree on the number of samples {counts}; rows must be aligned")
    if labels is not None and labels.shape[0] != counts[0]:
        raise LowlabelError(f"{source}: {labels.shape[0]} labels for {counts[0]} samples")


def check_mask(mask: np.ndarray, n: int, n_views: int) -> np.ndarray:
    """`mask` as a bool (n, n_views) array; a LowlabelError unless it is 0/1 and every row keeps a view."""
    mask = np.asarray(mask)
    if mask.shape != (n, n_views):
        raise LowlabelError(f"mask has shape {mask.shape}, expected ({n}, {n_views}) for the views given")
    if not np.isin(mask, (0, 1)).all():
        raise LowlabelError("mask must hold only 0 (view missing) and 1 (view present)")
    if (mask.sum(axis=1) == 0).any():
        raise LowlabelError(f"{int((mask.sum(axis=1) == 0).sum())} mask row(s) keep no view; every sample needs one")
    return mask.astype(bool)


def make_mask(n: int, n_views: int, missing_rate: float, seed: int) -> np.ndarray:
    """Missing-view mask (n, n_views) 0/1 from the multiview world's `missing_view_mask` (paper's definition)."""
    if not 0.0 <= missing_rate < 1.0:
        raise LowlabelError(f"missing rate {missing_rate} is outside [0, 1); it is the fraction of incomplete samples")
    from lowlabel.data.synth.multiview import missing_view_mask

    return check_mask(missing_view_mask(n, n_views, missing_rate, seed), n, n_views).astype(np.int64)


def guess_layout(path: Path) -> str:
    """Layout key of LAYOUTS from the official file name (Scene-15.mat, LandUse_21.mat ...)."""
    for layout, pattern in _NAME_PATTERNS.items():
        if re.search(pattern, path.stem, flags=re.IGNORECASE):
            return layout
    raise LowlabelError(
        f"cannot tell the layout of {path} from its name; pass layout= one of {', '.join(LAYOUTS)} "
        "(the official files are Scene-15.mat, LandUse-21.mat, Caltech101-20.mat, NoisyMNIST.mat)"
    )


def _dense32(x: object) -> np.ndarray:
    if hasattr(x, "toarray"):  # scipy.sparse
        x = x.toarray()  # type: ignore[union-attr]
    return np.asarray(x, dtype=np.float32)


def _cell(mat: dict, key: str, n_cells: int, path: Path) -> list[np.ndarray]:
    cells = np.asarray(mat[key]).reshape(-1)
    if cells.dtype != object or cells.size != n_cells:
        raise LowlabelError(f"{path}: '{key}' should be a 1x{n_cells} cell array of matrices, got "
                            f"{np.asarray(mat[key]).shape} {np.asarray(mat[key]).dtype}")
    return [_dense32(c) for c in cells]


def _labels(y: object) -> np.ndarray:
    y = np.asarray(y).reshape(np.asarray(y).shape[0], -1)[:, 0].astype(np.int64)
    return y - 1 if y.min() == 1 else y  # official: 1-based labels shifted to 0


def load_mat(path: str | Path, layout: str | None = None, shuffle_seed: int = 0) -> MultiView:
    """Read an official COMPLETER .mat file and select the views the official loader uses.

    scene15: X{0} (20-d) and X{1} (59-d); landuse21: X{1} (59-d) and X{2} (40-d), rows shuffled (deviation: a seeded
    permutation, `shuffle_seed`, instead of the official unseeded `random.sample`); caltech101_20: X{3} (HOG) and
    X{4} (GIST), each min-max scaled by its global min/max; noisymnist: tune+test sets (XV1/XTe1, XV2/XTe2) with
    tuneLabel/testLabel. Features float32, labels 0-based. `layout` defaults to a guess from the file name.
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path} does not exist; the official files are Scene-15.mat, LandUse-21.mat ...")
    layout = layout or guess_layout(path)
    if layout not in LAYOUTS:
        raise LowlabelError(f"unknown layout '{layout}'; use one of {', '.join(LAYOUTS)}")
    try:
        mat = loadmat(str(path))
    except Exception as err:  # scipy raises several types for a file that is not MATLAB v5
        raise LowlabelError(f"{path} is not a MATLAB v5 .mat file scipy can read: {err}") from None
    keys = sorted(k for k in mat if not k.startswith("__"))
    needed = {"noisymnist": {"XV1", "XV2", "XTe1", "XTe2", "tuneLabel", "testLabel"}}.get(layout, {"X", "Y"})
    if not needed <= set(keys):
        raise LowlabelError(f"{path} has keys {keys}, but the {layout} layout needs {sorted(needed)}; "
                            "this reader knows only the official COMPLETER files")
    if layout == "noisymnist":
        views = [np.concatenate([_dense32(mat["XV1"]), _dense32(mat["XTe1"])]),
                 np.concatenate([_dense32(mat["XV2"]), _dense32(mat["XTe2"])])]
        labels = _labels(np.concatenate([np.asarray(mat["tuneLabel"]).reshape(-1, 1)[:, :1],
                                         np.asarray(mat["testLabel"]).reshape(-1, 1)[:, :1]]))
    elif layout == "caltech101_20":
        cells = _cell(mat, "X", 6, path)
        views = [(x - x.min()) / max(float(x.max() - x.min()), 1e-12) for x in (cells[3], cells[4])]
        labels = _labels(mat["Y"])
    else:
        cells = _cell(mat, "X", 3, path)
        views = [cells[0], cells[1]] if layout == "scene15" else [cells[1], cells[2]]
        labels = _labels(mat["Y"])
    check_views(views, labels, source=str(path))
    if layout == "landuse21":
        order = np.random.default_rng(shuffle_seed).permutation(labels.shape[0])
        views, labels = [x[order] for x in views], labels[order]
    return MultiView(views=[np.ascontiguousarray(x) for x in views], labels=labels, name=layout)


def digits_world(seed: int = 0, n: int | None = None) -> MultiView:
    """The synthetic two-view digits world (lowlabel.data.synth.multiview) as a MultiView."""
    from lowlabel.data.synth.multiview import two_view_digits

    data = two_view_digits(seed=seed, n=n)
    views = [np.asarray(v, dtype=np.float32) for v in data.views]
    labels = np.asarray(data.labels, dtype=np.int64)
    check_views(views, labels, source="two_view_digits")
    return MultiView(views=views, labels=labels, name="digits")
