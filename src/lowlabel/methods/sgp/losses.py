"""SGP's student losses as pure functions of tensors (spec "Students"): the CAPS epipolar + cycle loss under a
(pseudo-)fundamental matrix, and FCGF's hardest-contrastive loss on (pseudo-)positive point pairs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from lowlabel.errors import LowlabelError


def epipolar_distance(x1: torch.Tensor, x2: torch.Tensor, fmatrix: torch.Tensor) -> torch.Tensor:
    """Pixel distance of x2 to the epipolar line l = F x1: |x2h . l| / max(||l[0:2]||, 1e-8) (CAPS `epipolar_cost`).

    x1, x2: (B, N, 2) pixels (x, y); fmatrix: (B, 3, 3) with x2h^T F x1h = 0 for true matches -> (B, N).
    """
    if x1.ndim != 3 or x1.shape[-1] != 2 or x1.shape != x2.shape or fmatrix.shape != (x1.shape[0], 3, 3):
        raise LowlabelError(f"epipolar_distance needs x1, x2 (B, N, 2) and F (B, 3, 3); got {tuple(x1.shape)}, "
                            f"{tuple(x2.shape)}, {tuple(fmatrix.shape)}")
    ones = torch.ones_like(x1[..., :1])
    lines = torch.cat([x1, ones], -1) @ fmatrix.transpose(1, 2)  # (B, N, 3): rows (F x1h)^T
    lines = lines / lines[..., :2].norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return (torch.cat([x2, ones], -1) * lines).sum(-1).abs()


def std_weights(std: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """CAPS `set_weight` (std on): w = (1/std) / mean(1/std) over the whole batch, detached; with a mask, w * mask
    divided by (mean(w * mask) + 1e-8). std: (B, N) > 0 (clamped at 1e-10), mask: (B, N) bool -> (B, N)."""
    inverse = 1.0 / std.clamp_min(1e-10)
    w = (inverse / inverse.mean()).detach()
    if mask is not None:
        w = w * mask.to(w.dtype)
        w = w / (w.mean() + 1e-8)
    return w


def caps_loss(coord1: torch.Tensor, pred: Mapping[str, torch.Tensor], fmatrix: torch.Tensor,
              image_size: Sequence[int], *, window_size: float = 0.125, th_epipolar: float = 0.5,
              th_cycle: float = 0.025, cycle_px: float = 40.0, w_epipolar_coarse: float = 1.0,
              w_epipolar_fine: float = 1.0, w_cycle: float = 0.1) -> dict[str, torch.Tensor]:
    """The CAPS coarse-to-fine loss L = E_c + E_f + 0.1 C_c + 0.1 C_f (spec "Students", CAPS `CtoFCriterion`).

    coord1: (B, N, 2) query pixels in image 1; pred: the student's output with `coord2_ec`, `coord2_ef` (B, N, 2)
    coarse/fine expected matches in image 2, `coord1_lc`, `coord1_lf` (B, N, 2) their loop-back locations in image 1,
    `std_c`, `std_f`, `std_lc`, `std_lf` (B, N) the spreads; fmatrix (B, 3, 3) the (pseudo-)F; image_size (H, W).
    With d_c, d_f the epipolar distances (pixels), s = shorter edge, l = longer edge:
    E_c = mean(w_c d_c) / l, w_c = std_weights(std_c, d_c < 0.5 s);
    E_f = mean(w_f d_f) / l, w_f = std_weights(std_f, d_f < 0.5 s and d_c < 0.125 s);
    C_k = mean(w d_loop [d_loop < 40 px]) / l, w = std_weights(std_k * std_lk, d_k < 0.025 s), k in {c, f}.
    As in the official code one weight (w_cycle_coarse, 0.1) serves both cycle terms, and the std loss (weight 0)
    is left out. Returns {"loss", "epipolar_coarse", "epipolar_fine", "cycle_coarse", "cycle_fine"}.
    """
    shorter, longer = float(min(image_size)), float(max(image_size))
    d_c = epipolar_distance(coord1, pred["coord2_ec"], fmatrix)
    d_f = epipolar_distance(coord1, pred["coord2_ef"], fmatrix)
    w_c = std_weights(pred["std_c"], d_c < shorter * th_epipolar)
    w_f = std_weights(pred["std_f"], (d_f < shorter * th_epipolar) & (d_c < shorter * window_size))
    out = {"epipolar_coarse": (w_c * d_c).mean() / longer, "epipolar_fine": (w_f * d_f).mean() / longer}
    for level, dist in (("c", d_c), ("f", d_f)):
        w = std_weights(pred[f"std_{level}"] * pred[f"std_l{level}"], dist < shorter * th_cycle)
        loop = (coord1 - pred[f"coord1_l{level}"]).norm(dim=-1)
        loop = torch.where(loop < cycle_px, loop, torch.zeros_like(loop))
        out["cycle_coarse" if level == "c" else "cycle_fine"] = (w * loop).mean() / longer
    out["loss"] = (w_epipolar_coarse * out["epipolar_coarse"] + w_epipolar_fine * out["epipolar_fine"]
                   + w_cycle * (out["cycle_coarse"] + out["cycle_fine"]))
    return out


def _masked_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean() if x.numel() else x.sum()


def _l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """FCGF `pdist(.., 'L2')`: sqrt(||a_i - b_k||^2 + 1e-7) (P, S), from the expanded square (bounded memory)."""
    sq = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.t()
    return (sq.clamp_min(0) + 1e-7).sqrt()


def hardest_contrastive_loss(f0: torch.Tensor, f1: torch.Tensor, positives: torch.Tensor, *, num_pos: int = 4096,
                             num_hn_samples: int = 1024, pos_margin: float = 0.1, neg_margin: float = 1.4,
                             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """FCGF's hardest-contrastive loss (spec "Students", FCGF `HardestContrastiveLossTrainer`).

    f0 (N0, D), f1 (N1, D) features of the two clouds (all pairs of a batch concatenated); positives (P, 2) int64
    rows (i, j): f0[i] and f1[j] should match (points within 2 voxels under the pseudo-T). Up to `num_pos` positives
    and `num_hn_samples` candidates per side are drawn without replacement (from `generator`). With
    d(a, b) = sqrt(||a - b||^2 + 1e-7):
    positive = mean relu(||f0_i - f1_j||^2 - 0.1) over the sampled positives;
    negative = (mean relu(1.4 - min_k d(f0_i, f1_k))^2 + mean relu(1.4 - min_k d(f1_j, f0_k))^2) / 2, the minimum
    over the candidates of the other side; a hardest candidate that is itself a positive of that point (its pair is
    among all `positives`) is dropped, as the official hash test does. Deviation: a side whose every hardest
    candidate is dropped adds 0 (the official mean of nothing is NaN). Returns {"loss", "positive", "negative"}.
    """
    if f0.ndim != 2 or f1.ndim != 2 or f0.shape[1] != f1.shape[1] or positives.ndim != 2 or positives.shape[1] != 2:
        raise LowlabelError(f"hardest_contrastive_loss needs f0 (N0, D), f1 (N1, D), positives (P, 2); got "
                            f"{tuple(f0.shape)}, {tuple(f1.shape)}, {tuple(positives.shape)}")
    if len(positives) == 0:
        raise LowlabelError("hardest_contrastive_loss: no positive pairs (check the pseudo-transform and radius)")
    n0, n1, device = len(f0), len(f1), f0.device
    sel0 = torch.randperm(n0, generator=generator)[:num_hn_samples].to(device)
    sel1 = torch.randperm(n1, generator=generator)[:num_hn_samples].to(device)
    positives = positives.to(device).long()
    pos = positives
    if len(positives) > num_pos:
        pos = positives[torch.randperm(len(positives), generator=generator)[:num_pos].to(device)]
    i, j = pos[:, 0], pos[:, 1]
    pos_loss = F.relu((f0[i] - f1[j]).pow(2).sum(1) - pos_margin)
    min01, arg01 = _l2(f0[i], f1[sel1]).min(1)
    min10, arg10 = _l2(f1[j], f0[sel0]).min(1)
    base = max(n0, n1)
    keys = positives[:, 0] * base + positives[:, 1]
    keep0 = ~torch.isin(i * base + sel1[arg01], keys)
    keep1 = ~torch.isin(sel0[arg10] * base + j, keys)
    neg = (_masked_mean(F.relu(neg_margin - min01[keep0]).pow(2))
           + _masked_mean(F.relu(neg_margin - min10[keep1]).pow(2))) / 2
    pos_mean = pos_loss.mean()
    return {"loss": pos_mean + neg, "positive": pos_mean, "negative": neg}
