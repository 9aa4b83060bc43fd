"""FDRL's loss terms as pure functions of tensors (spec "Losses": L_cls, L_C, L_B, L_D and their weighted sum).

Notation: N images, M latent features (branches) of D values each, C expression classes. The learnable centres
(c_j for L_C, w̃_k for L_D) are parameters owned by the model (`model.FDRLHead`) and passed in here, so the
optimiser updates them (the unofficial re-implementation never did: its optimiser saw only the network).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lowlabel.errors import LowlabelError

BALANCE_MODES: tuple[str, ...] = ("normalised", "raw")


def compactness_loss(latent: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Compactness loss L_C = (1/N) Σ_i Σ_j ‖l_ij − c_j‖²₂ (scalar; spec "Compactness (FDN)").

    latent: (N, M, D) latent features l_ij of the Feature Decomposition Network; centres: (M, D), one learnable
    centre c_j per latent feature (shared by all classes). Deviation from the unofficial code: no clamp of the
    per-image distance to [1e-12, 1e12] (it only zeroes the gradient of an image lying exactly on its centres).
    """
    if latent.ndim != 3 or centres.shape != latent.shape[1:]:
        raise LowlabelError(f"compactness_loss needs latent (N, M, D) and centres (M, D), got {tuple(latent.shape)} "
                            f"and {tuple(centres.shape)}")
    return (latent - centres.unsqueeze(0)).pow(2).sum(dim=(1, 2)).mean()


def balance_loss(weights: torch.Tensor) -> torch.Tensor:
    """Balance loss L_B = ‖w̄ − w_u‖₁ with w̄ = (1/N) Σ_i w_i and w_u = (1/M)·1 (scalar; spec "Balance (Intra-RM)").

    weights: (N, M) per-image weight vectors, used as given: pass `normalise_weights(alphas)` for the default
    scale-consistent reading (each w_i sums to 1, so L_B ∈ [0, 2(M−1)/M]) or the raw alphas for the literal one
    (whose scale is up to D, so L_B ≈ Σ_j ᾱ_j; with λ2 = 1 it collapses training, see the spec). Deviation from
    the unofficial code: it broadcasts w̄ against an (N, M) uniform tensor, so its L1 norm is N times this one.
    """
    if weights.ndim != 2 or weights.shape[1] < 1:
        raise LowlabelError(f"balance_loss needs weights (N, M), got {tuple(weights.shape)}")
    uniform = 1.0 / weights.shape[1]
    return (weights.mean(dim=0) - uniform).abs().sum()


def distribution_loss(weights: torch.Tensor, labels: torch.Tensor, class_centres: torch.Tensor) -> torch.Tensor:
    """Distribution loss L_D = (1/N) Σ_i ‖w_i − w̃_{y_i}‖²₂ (scalar; spec "Distribution (Intra-RM)").

    weights: (N, M) weight vectors w_i (the raw alphas in the paper); labels: (N,) int64 class indices y_i in
    [0, C); class_centres: (C, M), one learnable centre w̃_k per class. Deviation from the unofficial code (its
    `CenterLoss`): no clamp of the per-image distance to [1e-12, 1e12].
    """
    if weights.ndim != 2 or labels.shape != weights.shape[:1] or class_centres.ndim != 2 \
            or class_centres.shape[1] != weights.shape[1]:
        raise LowlabelError(f"distribution_loss needs weights (N, M), labels (N,) and class_centres (C, M), got "
                            f"{tuple(weights.shape)}, {tuple(labels.shape)} and {tuple(class_centres.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= class_centres.shape[0]):
        raise LowlabelError(f"distribution_loss: labels span [{int(labels.min())}, {int(labels.max())}] but there "
                            f"are {class_centres.shape[0]} class centres; labels must be 0..C-1")
    return (weights - class_centres[labels]).pow(2).sum(dim=1).mean()


def normalise_weights(alphas: torch.Tensor) -> torch.Tensor:
    """Per-image normalised weights w_i / Σ_j w_ij (N, M), each row summing to 1 (alphas (N, M), all > 0)."""
    return alphas / alphas.sum(dim=1, keepdim=True)


def fdrl_loss(logits: torch.Tensor, labels: torch.Tensor, latent: torch.Tensor, alphas: torch.Tensor,
              latent_centres: torch.Tensor, class_centres: torch.Tensor, *, lambda_c: float = 1e-4,
              lambda_b: float = 1.0, lambda_d: float = 1e-4, balance: str = "normalised") -> dict[str, torch.Tensor]:
    """Total loss L = L_cls + λ1·L_C + λ2·L_B + λ3·L_D (spec "Total") and its terms, as a dict of scalars.

    logits: (N, C) EPN outputs; labels: (N,) int64; latent: (N, M, D); alphas: (N, M) raw intra-feature weights
    α_ij ∈ (0, D); latent_centres: (M, D); class_centres: (C, M). `balance` picks the weights of L_B: "normalised"
    (default: alphas / their per-image sum) or "raw" (the literal form on α). L_D uses the raw alphas (the paper's
    w_i) in both modes. Defaults λ1 = 1e-4, λ2 = 1, λ3 = 1e-4 are the unofficial code's "paper" values. Keys:
    total, cls, compactness, balance, distribution.
    """
    if balance not in BALANCE_MODES:
        raise LowlabelError(f"balance='{balance}' is not a balance-loss mode; use one of {', '.join(BALANCE_MODES)}")
    cls = F.cross_entropy(logits, labels)
    compact = compactness_loss(latent, latent_centres)
    bal = balance_loss(normalise_weights(alphas) if balance == "normalised" else alphas)
    dist = distribution_loss(alphas, labels, class_centres)
    total = cls + lambda_c * compact + lambda_b * bal + lambda_d * dist
    return {"total": total, "cls": cls, "compactness": compact, "balance": bal, "distribution": dist}


def centre_loss(features: torch.Tensor, labels: torch.Tensor, class_centres: torch.Tensor) -> torch.Tensor:
    """Centre loss (Wen et al., ECCV 2016) of the "backbone + centre loss" baseline: (1/N) Σ_i ‖x_i − c_{y_i}‖²₂.

    features: (N, P) pooled backbone features; labels: (N,) int64 in [0, C); class_centres: (C, P), learnable (the
    same optimiser moves them, instead of Wen et al.'s separate α-rate update). The same form as L_D on features.
    """
    return distribution_loss(features, labels, class_centres)
