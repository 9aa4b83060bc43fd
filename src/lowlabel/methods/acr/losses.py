"""ACR's losses, selection gates and schedules as pure functions of tensors and of the step (spec: Losses, Training).

Defaults are the official ones (`parser.py` of SHI-Labs/Semi-Supervised-Transfer-Learning). The constants that the
paper does not name (the 1/10000 AKC scale, the iteration-10 ARC start, the "more than 20 buffered rows" condition)
are module constants and named parameters here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lowlabel.errors import LowlabelError

ENTROPY_THRESHOLD = 0.7  # `mmd_threshold` and `kd_threshold`: H <= 0.7 ln C
SOURCE_CLASSES = 1000  # `kd_ent_class`: the AKC gate uses ln(1000) whatever the source head's width
AKC_SCALE = 10000.0  # hard-coded divisor of the squared feature distance in the official AKC
TABLE_SIZE = 128  # `mmd_feat_table_l` = `mmd_feat_table_u`
ARC_START = 10  # `reg_warmup`: ARC only for iteration > 10
ARC_MIN_ROWS = 20  # ARC only when the labelled table holds more than 20 rows
REG_WARMUP = 100  # `reg_warmup_iter`: linear warm-up of both lambdas
LAMBDA_ARC = 50.0  # `lambda_mmd`
LAMBDA_AKC = 0.0  # `lambda_kd` (README: 1 to switch AKC on)
FIXMATCH_THRESHOLD = 0.95
ICT_ALPHA = 0.75
EMA_FACTOR = 0.999


def pooled(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) feature maps -> (N, C) spatial means (official `adaptive_avg_pool2d(., 1)`); (N, C) unchanged."""
    if features.ndim == 4:
        return features.mean(dim=(2, 3))
    if features.ndim == 2:
        return features
    raise LowlabelError(f"features must be (N, C) or (N, C, H, W), got shape {tuple(features.shape)}")


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Prediction entropy H(softmax(z)) = -Σ_c p_c log p_c in nats; logits (N, K) -> (N,)."""
    return -(logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1)


def entropy_mask(logits: torch.Tensor, threshold: float, num_classes: int) -> torch.Tensor:
    """Adaptive selection m(x) = 1[H(softmax(z(x))) <= threshold · ln(num_classes)] (spec: "Entropy selection").

    logits (N, K) -> (N,) bool, no gradient. `num_classes` is separate from K: the official AKC gate uses
    ln(1000) for the source head. ARC: target logits, C = number of target classes, threshold 0.7.
    """
    if logits.ndim != 2:
        raise LowlabelError(f"entropy_mask needs (N, K) logits, got shape {tuple(logits.shape)}")
    if num_classes < 2:
        raise LowlabelError(f"entropy_mask: num_classes={num_classes}; the gate is relative to ln(C), C >= 2")
    with torch.no_grad():
        return entropy(logits) <= threshold * math.log(num_classes)


def rbf_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(a_i, b_j) = exp(-(1/d) Σ_c (a_ic - b_jc)²); a (N, d), b (M, d) -> (N, M) (official `compute_kernel`).

    Deviation: the squared distance comes from |a|² + |b|² - 2 a·b (clamped at 0) instead of the official N×M×d
    difference tensor: equal up to rounding, with O(N M) memory.
    """
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return torch.exp(-sq.clamp_min(0.0) / a.shape[1])


def mmd_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ARC's biased MMD² between two feature sets (spec: ARC step 3; official `reg_MMD`).

    x (N, C) or (N, C, H, W), y (M, C) or (M, C, H, W); maps are spatially mean-pooled first. Returns
    mean k(x, x) + mean k(y, y) - 2 mean k(x, y) with every pair, diagonals included, and the fixed-bandwidth
    kernel of `rbf_kernel` (mean, not sum, of squared differences). Scalar; 0 for identical inputs.
    """
    a, b = pooled(x), pooled(y)
    if a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise LowlabelError(f"mmd_loss needs two non-empty sets of the same width, got {tuple(a.shape)} and "
                            f"{tuple(b.shape)}")
    return rbf_kernel(a, a).mean() + rbf_kernel(b, b).mean() - 2.0 * rbf_kernel(a, b).mean()


def akc_loss(target_features: torch.Tensor, source_features: torch.Tensor, mask: torch.Tensor,
             scale: float = AKC_SCALE) -> torch.Tensor:
    """AKC: L = Σ_x m(x) ℓ(x) / Σ_x m(x), ℓ(x) = Σ_c (GAP f_t(x)_c - GAP f_s(x)_c)² / scale (spec: AKC).

    target_features, source_features: (N, C) or (N, C, H, W) (pooled first); mask (N,) bool or float weights.
    The source side is detached. The denominator is 1 when no sample is selected, so an empty mask gives 0 (still
    connected to the target features, with zero gradient). `scale` is the official hard-coded 10000.
    """
    t, s = pooled(target_features), pooled(source_features).detach()
    if t.shape != s.shape:
        raise LowlabelError(f"akc_loss: target features {tuple(t.shape)} and source features {tuple(s.shape)} "
                            "differ; AKC needs the same feature width in both models (same backbone family)")
    if mask.shape != t.shape[:1]:
        raise LowlabelError(f"akc_loss: mask has shape {tuple(mask.shape)}, expected ({t.shape[0]},)")
    m = mask.to(t.dtype)
    per_sample = ((t - s) ** 2).sum(dim=1) / scale
    total = m.sum()
    return (per_sample * m).sum() / torch.where(total > 0, total, torch.ones_like(total))


def update_feature_table(table: torch.Tensor | None, features: torch.Tensor, mask: torch.Tensor,
                         size: int) -> torch.Tensor:
    """ARC's FIFO feature table: append the masked rows of `features` and keep the newest `size` (spec: ARC step 2).

    table (T, ...) or None, features (N, ...), mask (N,) bool -> (min(T + n_selected, size), ...), oldest first.
    Rows already in the table are detached; the appended rows keep their gradient (as the official code, whose
    loss sees the current rows with gradient and whose stored table is detached). `size` <= 0 means no table:
    only the current selection is returned (official `feat_table_size` = -1). Deviation: the official first
    call stores the whole first selection even when it exceeds `size`; here the table never exceeds `size`.
    """
    if mask.shape != features.shape[:1]:
        raise LowlabelError(f"update_feature_table: mask shape {tuple(mask.shape)} does not match "
                            f"{features.shape[0]} feature rows")
    selected = features[mask.bool()]
    if size <= 0:
        return selected
    if table is not None:
        if table.shape[1:] != features.shape[1:]:
            raise LowlabelError(f"update_feature_table: table rows {tuple(table.shape[1:])} differ from feature "
                                f"rows {tuple(features.shape[1:])}")
        selected = torch.cat([table.detach().to(selected.dtype), selected])
    return selected[-size:]


def fixmatch_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  threshold: float = FIXMATCH_THRESHOLD) -> torch.Tensor:
    """FixMatch consistency: mean_i 1[max p_i >= threshold] · CE(student_i, argmax p_i), p = softmax(teacher).

    student_logits (N, K) on the strong view, teacher_logits (N, K) on the weak view (detached here) -> scalar.
    Official reduction (`alg pl`, `consistency ce`): the mean runs over all N samples, not over the selected ones.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise LowlabelError(f"fixmatch_loss: student {tuple(student_logits.shape)} and teacher "
                            f"{tuple(teacher_logits.shape)} logits must both be (N, K)")
    probs = teacher_logits.detach().softmax(dim=1)
    confidence, label = probs.max(dim=1)
    mask = (confidence >= threshold).to(student_logits.dtype)
    return (F.cross_entropy(student_logits, label, reduction="none") * mask).mean()


def mean_squared_consistency(logits: torch.Tensor, target_logits: torch.Tensor,
                             mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean-squared consistency: mean_i m_i · mean_c (softmax(z)_ic - softmax(t)_ic)² (official `mean_squared`).

    logits (N, K) with gradient; target_logits (N, K), detached (for mixed ICT targets pass log-probabilities, as
    `ict_mixup` returns: softmax(log p) = p); mask (N,) or None (= all ones). The mean runs over all N.
    """
    if logits.shape != target_logits.shape or logits.ndim != 2:
        raise LowlabelError(f"mean_squared_consistency: logits {tuple(logits.shape)} and targets "
                            f"{tuple(target_logits.shape)} must both be (N, K)")
    per_sample = ((logits.softmax(dim=1) - target_logits.detach().softmax(dim=1)) ** 2).mean(dim=1)
    if mask is not None:
        per_sample = per_sample * mask.to(per_sample.dtype)
    return per_sample.mean()


def sample_mixup(batch: int, alpha: float = ICT_ALPHA,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixing coefficients λ_i ~ Beta(alpha, alpha) (B,) float32 and a random permutation (B,) int64 (CPU).

    Beta is drawn as the first coordinate of a Dirichlet(alpha, alpha), which takes an explicit generator.
    """
    if alpha <= 0:
        raise LowlabelError(f"mixup alpha={alpha}: the Beta parameter must be positive (official ICT 0.75)")
    conc = torch.full((batch, 2), float(alpha), dtype=torch.float64)
    lam = torch._sample_dirichlet(conc, generator=generator)[:, 0].float()
    return lam, torch.randperm(batch, generator=generator)


def ict_mixup(inputs: torch.Tensor, target_logits: torch.Tensor, lam: torch.Tensor,
              perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ICT-style mixup (the official code's "MixMatch": no labelled mixup, no sharpening; spec: Training).

    inputs (B, ...) weak unlabelled images, target_logits (B, K) of the (EMA) teacher, lam (B,), perm (B,).
    Returns mixed inputs λ_i x_i + (1-λ_i) x_perm(i) and mixed targets as log-probabilities
    log(λ_i p_i + (1-λ_i) p_perm(i)), p = softmax(target_logits) (detached), for `mean_squared_consistency`.
    """
    lam = lam.to(device=inputs.device, dtype=inputs.dtype)
    perm = perm.to(inputs.device)
    x_lam = lam.view(-1, *([1] * (inputs.ndim - 1)))
    mixed_x = x_lam * inputs + (1 - x_lam) * inputs[perm]
    probs = target_logits.detach().softmax(dim=1)
    p_lam = lam.to(probs.dtype)[:, None]
    mixed_p = p_lam * probs + (1 - p_lam) * probs[perm]
    return mixed_x, mixed_p.log()


def warmup_weight(weight: float, iteration: int, warmup_iters: int) -> float:
    """Linear warm-up w · min(1, t / T) with t = iteration + 1 (0-based iteration), as the official trainer.

    T = `reg_warmup_iter` (100) for λ_ARC and λ_AKC, `warmup_iter` for the SSL coefficient; T <= t gives w.
    """
    t = iteration + 1
    return weight if warmup_iters <= t else weight * t / warmup_iters


def arc_active(iteration: int, labelled_rows: int, start: int = ARC_START, min_rows: int = ARC_MIN_ROWS) -> bool:
    """ARC's start condition: iteration > `start` (10) and the labelled table holds more than `min_rows` (20)."""
    return iteration > start and labelled_rows > min_rows


def ema_decay(step: int, factor: float = EMA_FACTOR, warmup: bool = True) -> float:
    """EMA-teacher factor at 0-based `step`: min(1 - 1/(step+1), factor) with warm-up, else `factor` (official)."""
    return min(1.0 - 1.0 / (step + 1), factor) if warmup else factor


