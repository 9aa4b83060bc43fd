"""COMPLETER's three loss terms as pure functions of tensors (spec: Losses 1-3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lowlabel.errors import LowlabelError

# float64 machine epsilon: the official code clamps every probability below it to it (also in float32).
EPS = 2.220446049250313e-16


def joint_distribution(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Symmetrised, normalised joint of two batches of simplex rows.

    z1, z2: (B, K) -> P (K, K) with P = (P̃ + P̃ᵀ)/2 / Σ, P̃ = Σ_b z1_b z2_bᵀ = z1ᵀ z2 (spec Loss 1, "Joint").
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise LowlabelError(f"latents must be two (B, K) tensors of the same shape, got {tuple(z1.shape)} and "
                            f"{tuple(z2.shape)}")
    joint = z1.t() @ z2
    joint = (joint + joint.t()) / 2
    return joint / joint.sum()


def cross_view_contrastive(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 9.0) -> torch.Tensor:
    """Cross-view contrastive loss L_cl = −Σ_ij P_ij [ln P_ij − (α+1) ln p_j − (α+1) ln p_i] (scalar).

    z1, z2: (B, K) softmax latents of the same B samples in two views. Equals −I(Z¹;Z²) − α(H(Z¹) + H(Z²)) up to
    the clamp: as in the official code, the marginals are taken from the unclamped joint, then every entry of P,
    p_i and p_j below float64 machine epsilon (2.220446049250313e-16) is replaced by it (no gradient through the
    clamped entries). Symmetric in (z1, z2). `alpha` is the official `lamb` argument (config `alpha`).
    """
    joint = joint_distribution(z1, z2)
    k = joint.shape[0]
    p_i = joint.sum(dim=1).view(k, 1).expand(k, k)
    p_j = joint.sum(dim=0).view(1, k).expand(k, k)
    eps = torch.tensor(EPS, dtype=joint.dtype, device=joint.device)
    joint = torch.where(joint < eps, eps, joint)
    p_i = torch.where(p_i < eps, eps, p_i)
    p_j = torch.where(p_j < eps, eps, p_j)
    return -(joint * (joint.log() - (alpha + 1) * p_j.log() - (alpha + 1) * p_i.log())).sum()


def dual_prediction(
    z1: torch.Tensor, z2: torch.Tensor, pred_2_from_1: torch.Tensor, pred_1_from_2: torch.Tensor
) -> torch.Tensor:
    """Dual prediction loss L_pre = MSE(G¹(Z¹), Z²) + MSE(G²(Z²), Z¹) (scalar; spec Loss 2).

    z1, z2: (B, K) latents; pred_2_from_1 = G¹(z1), pred_1_from_2 = G²(z2): (B, K). MSE is the element mean
    (`F.mse_loss`), as in the official code (the paper writes squared norms: a constant rescaling). The targets are
    not detached, as in the official code.
    """
    return F.mse_loss(pred_2_from_1, z2) + F.mse_loss(pred_1_from_2, z1)


def reconstruction(x_hats: Sequence[torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Reconstruction loss L_rec = Σ_v MSE(dec^v(Z^v), X^v) (scalar; spec Loss 3).

    x_hats, xs: one (B, d_v) tensor per view; MSE is the element mean per view (official `F.mse_loss`).
    """
    if len(x_hats) != len(xs) or not xs:
        raise LowlabelError(f"reconstruction needs one reconstruction per view, got {len(x_hats)} for {len(xs)}")
    return torch.stack([F.mse_loss(x_hat, x) for x_hat, x in zip(x_hats, xs, strict=True)]).sum()
