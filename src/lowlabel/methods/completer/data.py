"""COMPLETER's data: the official .mat layouts (Scene-15, LandUse-21, Caltech101-20, NoisyMNIST), checks of
multi-view inputs and missing-view masks, and the adapter to the synthetic two-view digits world."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lowlabel.errors import LowlabelError
from lowlabel.methods.completer.matfile import read_mat

# Official per-dataset settings (configure.py): latent size and model seed.
LAYOUTS: dict[str, dict[str, int]] = {
    "scene15": {"d_z": 128, "seed": 8},
    "landuse21": {"d_z": 64, "seed": 3},
    "caltech101_20": {"d_z": 128, "seed": 4},
    "noisymnist": {"d_z": 64, "seed": 0},
}
OTHER_DATA = {"d_z": 32, "seed": 0}  # the same settings for data of no official layout (digits world, your own)
GENERIC = "generic"  # your own data: key X, a 1xV cell array of (n, d_v) matrices; optional Y, n labels
_NAME_PATTERNS = {
    "scene15": r"scene[-_]?15",
    "landuse21": r"landuse[-_]?21",
    "caltech101_20": r"caltech101[-_]?20",
    "noisymnist": r"noisy[-_]?mnist",
}


@dataclass
class MultiView:
    """Views (n, d_v) float32, one per view, and labels (n,) int64 starting at 0, or None for unlabelled data;
    `name` is the layout (or world), `source` the file read (for messages)."""

    views: list[np.ndarray]
    labels: np.ndarray | None
    name: str = ""
    source: str = ""

    @property
    def n_clusters(self) -> int:
        """The number of distinct labels (the official K); unlabelled data must be given K explicitly."""
        if self.labels is None:
            raise LowlabelError(f"{self.source or self.name or 'the data'} has no labels (no Y), so K is unknown: "
                                "pass --n-clusters K (config data.n_clusters)")
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
            raise LowlabelError(f"{source}: view {v} has NaN or inf (or values beyond float32) in {bad} row(s); "
                                "impute or drop them first")
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


def guess_layout(path: Path, keys: Sequence[str]) -> str:
    """Layout of a .mat file: an official one from its name (Scene-15.mat, LandUse_21.mat ...), else from its keys
    (XV1/XTe1... -> noisymnist; X -> generic)."""
    for layout, pattern in _NAME_PATTERNS.items():
        if re.search(pattern, path.stem, flags=re.IGNORECASE):
            return layout
    if {"XV1", "XV2", "XTe1", "XTe2"} <= set(keys):
        return "noisymnist"
    if "X" in keys:
        return GENERIC
    raise LowlabelError(
        f"{path} has keys {sorted(keys)}: neither an official COMPLETER file nor the generic layout (key X, a 1xV cell "
        "array of (n, d_v) matrices, optional Y with n labels); save your views as X and your labels as Y"
    )


def _dense32(x: object, what: str) -> np.ndarray:
    if hasattr(x, "toarray"):  # scipy.sparse
        x = x.toarray()  # type: ignore[union-attr]
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) \
            or np.issubdtype(x.dtype, np.complexfloating):
        raise LowlabelError(f"{what} holds {x.dtype} values, not a real numeric matrix")
    with np.errstate(over="ignore"):  # values beyond float32's range become inf, which check_views reports
        return x.astype(np.float32)


def _cells(mat: dict, path: Path) -> list[np.ndarray]:
    x = np.asarray(mat["X"])
    if x.dtype != object or x.ndim != 2 or 1 not in x.shape:
        raise LowlabelError(f"{path}: 'X' should be a 1xV cell array of (n, d_v) matrices, got {x.dtype} of shape "
                            f"{x.shape} (from Python: X = np.empty((1, V), dtype=object), X[0, v] = view v)")
    return [_dense32(c, f"{path}: X{{{i + 1}}}") for i, c in enumerate(x.reshape(-1))]


def _labels(y: object, n: int, path: Path, key: str = "Y", shift: bool = True) -> np.ndarray:
    """Labels as (n,) int64, 1-based ones shifted to 0 when `shift` (official); a LowlabelError unless there are n
    finite integer values (an (n, k) array gives its first column, as the official loader)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[0] == 1 and y.shape[1] == n:
        y = y.T
    y = y.reshape(y.shape[0], -1)[:, 0] if y.ndim and y.shape[0] else y.reshape(-1)
    if y.size != n:
        raise LowlabelError(f"{path}: '{key}' has {y.size} label(s) for {n} samples; give one label per sample")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool) or np.issubdtype(y.dtype, np.complexfloating):
        raise LowlabelError(f"{path}: '{key}' holds {y.dtype} values; labels must be integers")
    y = y.astype(np.float64)
    if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
        raise LowlabelError(f"{path}: '{key}' holds NaN, inf or non-integer values; labels must be integers")
    y = y.astype(np.int64)
    return y - 1 if shift and y.min() == 1 else y  # official: 1-based labels shifted to 0


def _pick(cells: list[np.ndarray], chosen: Sequence[int], path: Path) -> list[np.ndarray]:
    if len(set(chosen)) != len(chosen) or any(not 0 <= v < len(cells) for v in chosen):
        raise LowlabelError(f"{path}: views {list(chosen)} must be distinct indexes 0..{len(cells) - 1} of its "
                            f"{len(cells)} cells in X")
    return [cells[v] for v in chosen]


def load_mat(path: str | Path, layout: str | None = None, shuffle_seed: int = 0,
             views: Sequence[int] | None = None) -> MultiView:
    """Read a multi-view .mat file: an official COMPLETER file with the views the official loader uses, or the
    generic layout (your own data).

    scene15: X{0} (20-d) and X{1} (59-d); landuse21: X{1} (59-d) and X{2} (40-d), rows shuffled (deviation: a seeded
    permutation, `shuffle_seed`, instead of the official unseeded `random.sample`); caltech101_20: X{3} (HOG) and
    X{4} (GIST), each min-max scaled by its global min/max; noisymnist: tune+test sets (XV1/XTe1, XV2/XTe2) with
    tuneLabel/testLabel; generic: every cell of X (a 1xV cell of (n, d_v) matrices, V >= 2), labels from Y when
    present (labels=None otherwise). `views` (0-based cell indexes) replaces the layout's choice of cells. Features
    float32, labels 0-based. `layout` defaults to `guess_layout`. Every problem is a LowlabelError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path} does not exist (or is not a file)")
    if layout and layout not in (*LAYOUTS, GENERIC):
        raise LowlabelError(f"unknown layout '{layout}'; use one of {', '.join((*LAYOUTS, GENERIC))}")
    mat = read_mat(path)
    keys = sorted(k for k in mat if not k.startswith("__"))
    layout = layout or guess_layout(path, keys)
    needed = {"noisymnist": {"XV1", "XV2", "XTe1", "XTe2", "tuneLabel", "testLabel"}, GENERIC: {"X"}}.get(
        layout, {"X", "Y"})
    if not needed <= set(keys):
        raise LowlabelError(f"{path} has keys {keys}, but the {layout} layout needs {sorted(needed)}")
    if layout == "noisymnist":
        if views:
            raise LowlabelError(f"{path}: the noisymnist layout has exactly two views; views= does not apply")
        parts = {k: _dense32(mat[k], f"{path}: {k}") for k in ("XV1", "XTe1", "XV2", "XTe2")}
        picked = [np.concatenate([parts[f"XV{v}"], parts[f"XTe{v}"]]) for v in (1, 2)]
        check_views(picked, source=str(path))
        labels = np.concatenate([_labels(mat["tuneLabel"], parts["XV1"].shape[0], path, "tuneLabel", shift=False),
                                 _labels(mat["testLabel"], parts["XTe1"].shape[0], path, "testLabel", shift=False)])
        labels = labels - 1 if labels.min() == 1 else labels
        return _finish(picked, labels, layout, path, shuffle_seed)
    cells = _cells(mat, path)
    official = {"scene15": ([0, 1], 3), "landuse21": ([1, 2], 3), "caltech101_20": ([3, 4], 6)}
    if layout in official and not views and len(cells) != official[layout][1]:
        raise LowlabelError(f"{path}: the {layout} layout needs X as a 1x{official[layout][1]} cell array, got "
                            f"{len(cells)} cell(s); for other data pass --layout generic")
    picked = _pick(cells, list(views) if views else official.get(layout, (list(range(len(cells))), 0))[0], path)
    check_views(picked, source=str(path))
    if layout == "caltech101_20":
        picked = [(x - x.min()) / max(float(x.max() - x.min()), 1e-12) for x in picked]
    labels = _labels(mat["Y"], picked[0].shape[0], path) if "Y" in mat else None
    return _finish(picked, labels, layout, path, shuffle_seed)


def _finish(views: list[np.ndarray], labels: np.ndarray | None, layout: str, path: Path,
            shuffle_seed: int) -> MultiView:
    if layout == "landuse21":
        order = np.random.default_rng(shuffle_seed).permutation(views[0].shape[0])
        views, labels = [x[order] for x in views], None if labels is None else labels[order]
    return MultiView(views=[np.ascontiguousarray(x) for x in views], labels=labels, name=layout, source=str(path))


def digits_world(seed: int = 0, n: int | None = None) -> MultiView:
    """The synthetic two-view digits world (lowlabel.data.synth.multiview) as a MultiView."""
    from lowlabel.data.synth.multiview import two_view_digits

    data = two_view_digits(seed=seed, n=n)
    views = [np.asarray(v, dtype=np.float32) for v in data.views]
    labels = np.asarray(data.labels, dtype=np.int64)
    check_views(views, labels, source="two_view_digits")
    return MultiView(views=views, labels=labels, name="digits")
