"""DenseCL's equations as pure functions of tensors (spec: ../shared/specs/densecl.md, section Losses).

All inputs are L2-normalised along the channel dimension by the caller; queues are stored column-wise (C, K).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def _sums_are_safe(sums: torch.Tensor) -> bool:
    """Whether row sums of unshifted exponentials are exact enough: finite (no exp overflowed) and far above the
    subnormal range (the largest terms kept full precision). Meta tensors (FLOP counting) hold no values."""
    return sums.is_meta or bool(((sums > 1e-30) & (sums < float("inf"))).all())


class _QueueLogSumExp(torch.autograd.Function):
    """lse_n = log sum_k exp(q_n . queue_k) with a gradient w.r.t. q only, in two passes over the (K, N) matrix.

    Forward: the product, exp in place, a sum per query; the exponentials are kept. Backward: grad_q = (g / s) *
    (E^T Q^T) with E the kept exponentials and s their sums, so the softmax is never formed and no pass over the
    matrix is added. The matrix is laid out (K, N): on CPU (2 threads, C = 128, K = 65,536) that product measured
    1.2-1.7x faster than the (N, K) one. No max is subtracted first: with normalised inputs |logit| <= 1 / tau, so
    exp cannot overflow. Only if a sum comes out infinite or tiny is the product recomputed and shifted by each
    query's maximum, as in torch.logsumexp.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        exps = (queue.t() @ q.t()).exp_()
        sums = exps.sum(dim=0)
        shift = sums.new_zeros(sums.shape)
        if not _sums_are_safe(sums):
            torch.mm(queue.t(), q.t(), out=exps)
            shift = exps.amax(dim=0)
            sums = exps.sub_(shift).exp_().sum(dim=0)
        ctx.save_for_backward(exps, sums, queue)
        return sums.log() + shift

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        exps, sums, queue = ctx.saved_tensors
        return (exps.t() @ queue.t()).mul_((grad / sums).unsqueeze(1)), None


def queue_logsumexp(q: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """log sum_k exp(q_n . queue[:, k]) for every row n of q (N, C) against queue (C, K); gradient w.r.t. q only.

    Equal to torch.logsumexp(q @ queue, dim=1), computed in float32 at least, autocast or not (a float16 sum of
    65,536 exponentials can overflow), with two passes over the (K, N) matrix instead of about six (see
    `_QueueLogSumExp`).
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    device_type = "cpu" if q.is_meta else q.device.type  # meta tensors (FLOP counting) have no autocast of their own
    with torch.autocast(device_type, enabled=False):
        return _QueueLogSumExp.apply(q.to(dtype), queue.detach().to(dtype))


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE with one positive and a queue of negatives, mean over rows (spec Losses 1; MoCo's ContrastiveHead).

    q, k: (N, C) normalised queries and their positive keys; queue: (C, K) normalised negatives.
    L = mean_n CE([q_n.k_n, q_n.Q_1, ..., q_n.Q_K] / temperature, target 0). No gradient flows into `k` or `queue`
    (they come from the momentum encoder). Same as the official head, written as logsumexp - positive without
    building the (N, K + 1) logits: q is divided by the temperature before the products, the negatives' logsumexp
    is `queue_logsumexp`, and the positive joins it by logaddexp. With DenseCL's N = B x 49 rows and K = 65,536 the
    (K, N) matrix is 100 MB+, so the passes over it, not the FLOPs, are the cost.
    """
    k = k.detach()
    q = q / temperature
    positive = (q * k).sum(dim=1)
    negative = queue_logsumexp(q, queue).to(positive.dtype)
    return (torch.logaddexp(positive, negative) - positive).mean()


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
