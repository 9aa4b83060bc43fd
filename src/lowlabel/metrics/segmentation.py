"""Binary segmentation metrics with medpy's definitions (dc, jc, hd95, asd), and largest-component post-processing.

Distances are in voxel units unless `spacing` (one size per axis) is given. Surfaces follow medpy: a mask's
surface is the mask XOR its binary erosion by the 6-connected (face) structuring element, voxels on the array border
included. Empty-mask conventions (medpy raises instead): see each function and `case_metrics`.
Multi-class: `confusion_miou` (torch tensors), the mIoU of the confusion matrix accumulated over a set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from lowlabel.errors import LowlabelError

if TYPE_CHECKING:
    import torch


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred).astype(bool), np.asarray(ref).astype(bool)
    if pred.shape != ref.shape:
        raise LowlabelError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return pred, ref


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice = 2|P n G| / (|P| + |G|) of two binary masks of one shape (nonzero = foreground); 0 when both are empty
    (medpy `dc`)."""
    pred, ref = _pair(pred, ref)
    total = int(pred.sum() + ref.sum())
    return 2.0 * int((pred & ref).sum()) / total if total else 0.0


def jaccard(pred: np.ndarray, ref: np.ndarray) -> float:
    """Jaccard = |P n G| / |P u G| (medpy `jc`); 0 when both are empty (medpy divides by zero)."""
    pred, ref = _pair(pred, ref)
    union = int((pred | ref).sum())
    return int((pred & ref).sum()) / union if union else 0.0


def _surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: mask XOR binary_erosion(mask, face connectivity), border voxels count as surface."""
    footprint = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=footprint, iterations=1)


def _surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None) -> np.ndarray:
    """Distance from every surface voxel of `pred` to the nearest surface voxel of `ref` (medpy
    `__surface_distances`); computed on the bounding box of both masks, which gives the same distances."""
    both = np.argwhere(pred | ref)
    lo, hi = both.min(axis=0), both.max(axis=0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    pred, ref = pred[box], ref[box]
    sampling = None if spacing is None else [float(s) for s in spacing]
    dist = ndimage.distance_transform_edt(~_surface(ref), sampling=sampling)
    return dist[_surface(pred)]


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> None:
    if spacing is not None and (len(spacing) != ndim or min(float(s) for s in spacing) <= 0):
        raise LowlabelError(f"spacing {tuple(spacing)}: need {ndim} positive voxel sizes")


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th percentile (numpy linear interpolation) of the union of the surface distances P -> G and G -> P (medpy
    `hd95`). Conventions: empty prediction -> 0.0 (the official evaluation scores such a case 0); prediction but
    empty reference -> nan."""
    pred, ref = _pair(pred, ref)
    _check_spacing(spacing, pred.ndim)
    if not pred.any():
        return 0.0
    if not ref.any():
        return float("nan")
    dists = np.concatenate([_surface_distances(pred, ref, spacing), _surface_distances(ref, pred, spacing)])
    return float(np.percentile(dists, 95))


def asd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Average surface distance, directed P -> G: mean distance of P's surface voxels to G's surface (medpy `asd`).
    Conventions as `hd95`: empty prediction -> 0.0, empty reference -> nan."""
    pred, ref = _pair(pred, ref)
    _check_spacing(spacing, pred.ndim)
    if not pred.any():
        return 0.0
    if not ref.any():
        return float("nan")
    return float(_surface_distances(pred, ref, spacing).mean())


def case_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """Dice, Jaccard, 95HD and ASD of one case as the official `test_all_case`: an empty prediction scores all 0."""
    pred, ref = _pair(pred, ref)
    if not pred.any():
        return {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0}
    return {"dice": dice(pred, ref), "jaccard": jaccard(pred, ref), "hd95": hd95(pred, ref, spacing),
            "asd": asd(pred, ref, spacing)}


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected component of a binary mask (full connectivity: 26 neighbours in 3D), same dtype
    and shape; an empty mask is returned unchanged. Ties go to the component labelled first (scan order)."""
    mask = np.asarray(mask)
    labels, n = ndimage.label(mask != 0, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())[1:]
    return (labels == 1 + int(sizes.argmax())).astype(mask.dtype)


def confusion_miou(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> float:
    """Multi-class mIoU from the confusion matrix accumulated over the whole set (not averaged per image): the mean,
    over the classes present in the target or the prediction, of TP / (TP + FP + FN); an absent class does not count.

    pred, target: int64 tensors of one shape (any, e.g. (N, H, W)) with values in [0, n_classes).
    """
    cm = (target.reshape(-1) * n_classes + pred.reshape(-1)).bincount(minlength=n_classes**2)
    cm = cm.reshape(n_classes, n_classes).double()  # rows: target class, columns: predicted class
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean())
