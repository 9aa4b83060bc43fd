"""DTC's equations as pure functions of tensors: the normalised signed distance target, the Dice loss, the level-set
regression and the dual-task consistency (spec "Losses", items 1-4).

The signed distance map is an exact Euclidean distance transform written in torch (no scipy here): squared
distances are computed one axis at a time (Saito & Toriwaki's separable decomposition), the first axis in O(n)
with running max/min of the nearest background index, the others as min_j f(j) + (i - j)^2 scanned by offset
|i - j| with an exact early stop.
"""

from __future__ import annotations

import torch

from lowlabel.errors import LowlabelError


def _first_axis_sq(zero: torch.Tensor) -> torch.Tensor:
    """Squared distance along the last axis to the nearest True of `zero` (..., n), inf where a line has none."""
    n = zero.shape[-1]
    idx = torch.arange(n, device=zero.device, dtype=torch.float32).expand_as(zero)
    inf = torch.tensor(float("inf"), device=zero.device)
    before = torch.where(zero, idx, -inf).cummax(dim=-1).values  # index of the last zero at or before i
    after = torch.where(zero, idx, inf).flip(-1).cummin(dim=-1).values.flip(-1)  # first zero at or after i
    dist = torch.minimum(idx - before, after - idx)
    return dist * dist


def _min_plus_sq(f: torch.Tensor) -> torch.Tensor:
    """g(i) = min_j f(j) + (i - j)^2 along the FIRST axis of f (n, ...), exact.

    Offsets d = |i - j| are scanned in increasing order and the scan stops once d^2 exceeds every finite g, so the
    cost is (largest distance) x (voxels) element-wise operations rather than n x voxels; slicing the first axis
    keeps every operation on contiguous blocks.
    """
    n = f.shape[0]
    g = f.clone()
    can_fall = torch.isfinite(f).any(dim=0)  # lines that hold a finite value somewhere
    for d in range(1, n):
        # reduce along the scanned axis first: one read of g, and the masking works on a slice-sized tensor
        if d % 4 == 1 and d * d >= float(torch.where(can_fall, g.amax(dim=0), 0.0).max()):
            break
        torch.minimum(g[:-d], f[d:] + d * d, out=g[:-d])
        torch.minimum(g[d:], f[:-d] + d * d, out=g[d:])
    return g


def squared_edt(zero: torch.Tensor, n_spatial: int) -> torch.Tensor:
    """Exact squared Euclidean distance of every voxel to the nearest True voxel of `zero`, in voxel units.

    zero: bool (B, *spatial) with `n_spatial` spatial axes; each sample is separate. A sample with no True voxel
    gets inf everywhere. Equals scipy.ndimage.distance_transform_edt(~zero)**2 per sample.
    """
    sq = _first_axis_sq(zero)
    ndim = zero.dim()
    for axis in range(ndim - 2, ndim - 1 - n_spatial, -1):
        sq = _min_plus_sq(sq.movedim(axis, 0).contiguous()).movedim(0, axis)
    return sq.contiguous()


def signed_distance_map(mask: torch.Tensor) -> torch.Tensor:
    """Normalised signed distance map of binary masks: the level-set target of DTC (spec "Losses" 1).

    mask: (B, *spatial) with 2 or 3 spatial axes, values in {0, 1} (bool or numeric). Returns float32 of the same
    shape: SDF = N / max(N) - P / max(P), N = distance of a background voxel to the foreground, P = distance of a
    foreground voxel to the background (Euclidean, voxel units), then 0 on the inner boundary (foreground voxels
    with a 6-connected background neighbour, i.e. P = 1; skimage `find_boundaries(mode='inner')`). Inside < 0,
    outside > 0, range [-1, 1] per sample; no gradient (a target).
    Official behaviour kept: an all-background sample gives all zeros. Deviation: an all-foreground sample, a
    division by zero (NaN) in the official code, gives -1 everywhere (all inside, no boundary in view).
    """
    if mask.dim() not in (3, 4):
        raise LowlabelError(f"signed_distance_map: mask has shape {tuple(mask.shape)}; need (B, H, W) or (B, H, W, D)")
    fg = mask.bool() if mask.dtype == torch.bool else mask != 0
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise LowlabelError("signed_distance_map: mask holds values other than 0 and 1; binarise the label first")
    n_spatial = mask.dim() - 1
    with torch.no_grad():
        # foreground voxels: squared distance to the background; background voxels: to the foreground
        pos_sq, neg_sq = squared_edt(torch.cat([~fg, fg]), n_spatial).chunk(2)
        pos = torch.where(fg, pos_sq, torch.zeros_like(pos_sq)).sqrt()
        neg = torch.where(fg, torch.zeros_like(neg_sq), neg_sq).sqrt()
        dims = tuple(range(1, mask.dim()))
        pos_max = pos.nan_to_num(posinf=0.0).amax(dim=dims, keepdim=True)
        neg_max = neg.amax(dim=dims, keepdim=True)
        has_fg = fg.flatten(1).any(dim=1).view(-1, *([1] * n_spatial))
        all_fg = fg.flatten(1).all(dim=1).view(-1, *([1] * n_spatial))
        sdf = neg / neg_max.clamp_min(1.0) - pos / pos_max.clamp_min(1.0)
        sdf = torch.where(fg & (pos_sq == 1), torch.zeros_like(sdf), sdf)
        sdf = torch.where(has_fg, sdf, torch.zeros_like(sdf))
        return torch.where(all_fg, -torch.ones_like(sdf), sdf).float()


def dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss with squared denominators, one scalar over the whole batch (spec "Losses" 3).

    probs, target: same shape (any), probs in [0, 1]. 1 - (2 sum(p y) + s) / (sum(p^2) + sum(y^2) + s), s = 1e-5.
    """
    if probs.shape != target.shape:
        raise LowlabelError(f"dice_loss: probs {tuple(probs.shape)} and target {tuple(target.shape)} differ in shape")
    target = target.to(probs.dtype)
    inter = (probs * target).sum()
    return 1.0 - (2.0 * inter + smooth) / ((probs * probs).sum() + (target * target).sum() + smooth)


def level_set_loss(level_set: torch.Tensor, sdf: torch.Tensor) -> torch.Tensor:
    """L_LSF: mean squared error between the tanh level-set output and the SDF target (spec "Losses" 2); same shapes."""
    if level_set.shape != sdf.shape:
        raise LowlabelError(f"level_set_loss: level_set {tuple(level_set.shape)} and sdf {tuple(sdf.shape)} differ")
    return ((level_set - sdf) ** 2).mean()


def level_set_to_mask(level_set: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """The differentiable transform of DTC: sigmoid(-k z), ~1 inside (z < 0), ~0 outside; same shape as z."""
    return torch.sigmoid(-k * level_set)


def dual_task_consistency(level_set: torch.Tensor, seg_logits: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """L_DTC = mean over every sample and voxel of (sigmoid(-k z) - sigmoid(logits))^2 (spec "Losses" 4).

    level_set, seg_logits: (B, 1, *spatial), labelled and unlabelled samples alike; gradients reach both heads.
    """
    if level_set.shape != seg_logits.shape:
        raise LowlabelError(f"dual_task_consistency: level_set {tuple(level_set.shape)} and seg_logits "
                            f"{tuple(seg_logits.shape)} differ in shape")
    return ((level_set_to_mask(level_set, k) - torch.sigmoid(seg_logits)) ** 2).mean()
