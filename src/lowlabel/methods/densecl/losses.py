"""DenseCL's equations as pure functions of tensors (spec: ../shared/specs/densecl.md, section Losses).

All inputs are L2-normalised along the channel dimension by the caller; queues are stored column-wise (C, K).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE with one positive and a queue of negatives, mean over rows (spec Losses 1; MoCo's ContrastiveHead).

    q, k: (N, C) normalised queries and their positive keys; queue: (C, K) normalised negatives.
    L = mean_n CE([q_n.k_n, q_n.Q_1, ..., q_n.Q_K] / temperature, target 0). No gradient flows into `k` or `queue`
    (they come from the momentum encoder). Same as the official head, written as logsumexp - positive without
    building the (N, K + 1) logits: q is divided by the temperature before the products, and the positive joins
    the logsumexp of the negatives by logaddexp. With DenseCL's N = B x 49 rows and K = 65,536 that saves two full
    passes over a 100 MB+ matrix (the division and the concatenation) forward and backward.
    """
    k, queue = k.detach(), queue.detach()
    q = q / temperature
    positive = (q * k).sum(dim=1)
    negative = q @ queue.to(q.dtype)
    return (torch.logaddexp(positive, torch.logsumexp(negative, dim=1)) - positive).mean()


@torch.no_grad()
def dense_correspondence(f_q: torch.Tensor, f_k: torch.Tensor) -> torch.Tensor:
    """Index of the most similar key location for every query location (spec Losses 2).

    f_q, f_k: (B, C, S*S) backbone feature maps of the two views (normalised here along C).
    Returns c: LongTensor (B, S*S) with c[b, s] = argmax_t cos(f_q[b, :, s], f_k[b, :, t]); ties take the first
    index (torch.max semantics, as the official `max(dim=2)`). No gradient.
    """
    f_q = F.normalize(f_q.float(), dim=1)
    f_k = F.normalize(f_k.float(), dim=1)
    similarity = torch.einsum("bcs,bct->bst", f_q, f_k)
    return similarity.max(dim=2).indices


class DenseCLLoss(NamedTuple):
    """The two weighted terms of DenseCL and their sum (spec Losses 4)."""

    total: torch.Tensor
    single: torch.Tensor  # (1 - lambda) * L_q, the official `loss_contra_single`
    dense: torch.Tensor  # lambda * L_r, the official `loss_contra_dense` (0 when the dense branch is skipped)


def dense_info_nce(
    r_q: torch.Tensor, r_k: torch.Tensor, match: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2
) -> torch.Tensor:
    """Dense InfoNCE over all B*S*S query locations (spec Losses 3).

    r_q, r_k: (B, C, S*S) normalised dense-head outputs of the query and key views; match: (B, S*S) from
    `dense_correspondence`; queue: (C, K) pooled dense keys of earlier images. The positive of r_q[b, :, s] is
    r_k[b, :, match[b, s]]; negatives are the queue only (no other location of the same image), as the official code.
    """
    B, C, L = r_q.shape
    positive_keys = torch.gather(r_k, 2, match.unsqueeze(1).expand(B, C, L))
    return info_nce(r_q.permute(0, 2, 1).reshape(B * L, C), positive_keys.permute(0, 2, 1).reshape(B * L, C),
                    queue, temperature)


def densecl_loss(
    g_q: torch.Tensor,
    g_k: torch.Tensor,
    queue_global: torch.Tensor,
    r_q: torch.Tensor | None = None,
    r_k: torch.Tensor | None = None,
    match: torch.Tensor | None = None,
    queue_dense: torch.Tensor | None = None,
    *,
    lam: float = 0.5,
    temperature: float = 0.2,
) -> DenseCLLoss:
    """L = (1 - lambda) L_q + lambda L_r (spec Losses 4).

    g_q, g_k: (B, C) normalised global query/key; queue_global: (C, K). The dense inputs (see `dense_info_nce`) may
    be None only when lam == 0: then the dense term is not computed at all (MoCo-v2 mode; the official code still
    computes it and multiplies by 0).
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"densecl_loss: lam={lam} must lie in [0, 1]")
    single = (1.0 - lam) * info_nce(g_q, g_k, queue_global, temperature)
    dense_inputs = (r_q, r_k, match, queue_dense)
    if any(t is None for t in dense_inputs):
        if lam != 0.0:
            raise ValueError("densecl_loss: lam > 0 needs r_q, r_k, match and queue_dense")
        dense = single.new_zeros(())
    else:
        dense = lam * dense_info_nce(r_q, r_k, match, queue_dense, temperature)  # type: ignore[arg-type]
    return DenseCLLoss(single + dense, single, dense)
