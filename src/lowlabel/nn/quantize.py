"""A vector quantiser with a moving-average dictionary (SOHO's Visual Dictionary, VQ-VAE-2-style EMA codebook).

Every input row is assigned to its nearest code (squared L2), the dictionary is updated from the batch by moving
averages of per-code counts and sums (training mode only), and the output is the assigned code with a
straight-through gradient. Decay schedules are pure functions of the step; the module's `decay` is set per step
(`dictionary.decay = schedule(step)`) or passed to `forward`.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn


def constant_decay(step: int, value: float = 0.4) -> float:
    """The released SOHO configuration: decay 0.4 at every step (its ramp is defined but never called)."""
    return value


def ramped_decay(step: int, rate: float = 0.4, max_decay: float = 0.99) -> float:
    """min(rate * step, max_decay): the official `set_decay_updates` rule, ending at the paper's gamma 0.99.

    Steps count from 1 (step 0 gives decay 0: the dictionary becomes the batch's means)."""
    return min(rate * step, max_decay)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sum_over_ranks(tensor: Tensor) -> Tensor:
    """In-place sum over ranks (identity without a process group)."""
    if _distributed():
        dist.all_reduce(tensor)
    return tensor


def code_usage(indices: Tensor, num_codes: int) -> tuple[int, float]:
    """(number of codes used, perplexity exp(H(p))) of the empirical code distribution p of `indices` (any shape)."""
    counts = torch.bincount(indices.flatten(), minlength=num_codes).double()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return int((counts > 0).sum()), math.exp(entropy)


class VisualDictionary(nn.Module):
    """Nearest-code quantiser whose codes follow moving averages of the features assigned to them.

    Buffers (checkpointed): `embed` (num_codes, dim), N(0, 1) unless `embed` is given; `cluster_size` (num_codes)
    and `embed_avg` (num_codes, dim), both starting at 0 as in the official `SOHO_Pre_VD`; `cluster_sum`
    (num_codes), the running count of assignments (logging only).

    Update, training mode only, for a batch x (N, dim) with one-hot assignments E (N, num_codes) and decay d
    (spec "Visual Dictionary update"): n = Σ_i E_i, s = Eᵀ x (summed over ranks under DDP);
    cluster_size <- d·cluster_size + (1-d)·n; embed_avg <- d·embed_avg + (1-d)·s; with m = Σ cluster_size,
    embed <- embed_avg / ((cluster_size + eps) / (m + K·eps) · m), then averaged over ranks. Because embed_avg
    starts at 0, every code that receives nothing at the first training step becomes the zero vector (as
    officially). The output uses the dictionary after this update (as officially).

    Deviations from the official code: distances and the update are computed in the buffers' dtype (float32)
    even under autocast (the official distances follow the input dtype); indices come back as (N,) instead of
    (N, 1); without a process group the DDP reductions are skipped instead of failing.
    """

    embed: Tensor
    cluster_size: Tensor
    embed_avg: Tensor
    cluster_sum: Tensor

    def __init__(self, num_codes: int, dim: int, decay: float, embed: Tensor | None = None, *,
                 eps: float = 1e-5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"VisualDictionary needs num_codes >= 1 and dim >= 1, got {num_codes} and {dim}")
        if embed is None:
            embed = torch.randn(num_codes, dim, generator=generator)
        elif tuple(embed.shape) != (num_codes, dim):
            raise ValueError(f"initial embed has shape {tuple(embed.shape)}, expected ({num_codes}, {dim})")
        self.num_codes, self.dim, self.decay, self.eps = num_codes, dim, float(decay), eps
        self.register_buffer("embed", embed.detach().float().clone())
        self.register_buffer("cluster_size", torch.zeros(num_codes))
        self.register_buffer("embed_avg", torch.zeros(num_codes, dim))
        self.register_buffer("cluster_sum", torch.zeros(num_codes))

    @torch.no_grad()
    def assign(self, x: Tensor) -> Tensor:
        """Index (N,) of the nearest code to each row of x (N, dim): argmin over codes of ||e||² - 2 x·e (||x||² is the
        same for every code of a row), ties -> lowest. One fused (N, num_codes) product: faster and leaner than the
        full distance or `torch.cdist` (benchmarks/soho.py)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            xe = x.detach().to(self.embed.dtype)
            scores = torch.addmm(self.embed.pow(2).sum(1), xe, self.embed.t(), alpha=-2)
        return scores.argmin(dim=1)

    @torch.no_grad()
    def update(self, x: Tensor, indices: Tensor, decay: float) -> None:
        """One moving-average step of the dictionary from rows x (N, dim) assigned to `indices` (N,)."""
        xe = x.detach().to(self.embed.dtype)
        counts = torch.bincount(indices, minlength=self.num_codes).to(xe.dtype)
        sums = torch.zeros_like(self.embed_avg).index_add_(0, indices, xe)
        counts, sums = _sum_over_ranks(counts), _sum_over_ranks(sums)
        self.cluster_sum.add_(counts)
        self.cluster_size.mul_(decay).add_(counts * (1 - decay))
        self.embed_avg.mul_(decay).add_(sums * (1 - decay))
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        embed = self.embed_avg / smoothed.unsqueeze(1)
        if _distributed():
            embed.div_(dist.get_world_size())
            dist.all_reduce(embed)
        self.embed.copy_(embed)

    def forward(self, x: Tensor, decay: float | None = None) -> tuple[Tensor, Tensor]:
        """Quantise x (N, dim) -> (quantized (N, dim) in x's dtype, indices (N,) long).

        In training mode the dictionary is first updated with `decay` (default: `self.decay`). The gradient of
        `quantized` with respect to x is the identity (straight-through); the dictionary gets none.
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"VisualDictionary expects (N, {self.dim}) features, got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("VisualDictionary got no feature rows to quantise")
        indices = self.assign(x)
        if self.training:
            self.update(x, indices, self.decay if decay is None else float(decay))
        quantized = self.embed[indices].to(x.dtype)
        return x + (quantized - x).detach(), indices
