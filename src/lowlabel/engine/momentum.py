"""Momentum (EMA) encoders and a feature queue with cross-rank gathering: one of each for every method."""

from __future__ import annotations

import copy

import torch
from torch import nn

from lowlabel.engine.runtime import all_gather


class MomentumEncoder(nn.Module):
    """A frozen copy of an online network, moved towards it by `update(online, m)`: θ_k ← m θ_k + (1 − m) θ_q.

    Only parameters are averaged; buffers (e.g. BatchNorm statistics) stay the copy's own, computed by its own
    forward passes, as in MoCo's key encoder. The copy never receives gradients. A momentum that changes over
    training comes from a schedule function and is passed to `update` each step.
    """

    def __init__(self, online: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(online)
        for p in self.module.parameters():
            p.requires_grad_(False)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float) -> None:
        """EMA step towards `online`'s parameters (same architecture as the copy)."""
        target = list(self.module.parameters())
        source = [p.detach() for p in online.parameters()]
        if len(target) != len(source):
            raise ValueError("MomentumEncoder.update: online network differs from the copy")
        torch._foreach_lerp_(target, source, 1.0 - momentum)


class FeatureQueue(nn.Module):
    """A FIFO of the last K feature vectors, stored column-wise as `features` (dim, K), L2-normalised at init.

    `enqueue(keys)` gathers the keys of every rank first (rank order), so all ranks hold the same queue.
    Both the features and the write pointer are buffers: they are checkpointed with the model.
    """

    features: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, dim: int, size: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        init = torch.randn(dim, size, generator=generator)
        self.register_buffer("features", nn.functional.normalize(init, dim=0))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.features.shape[1]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Append `keys` (B, dim) from this rank (and all other ranks), overwriting the oldest entries."""
        keys = all_gather(keys.detach()).to(self.features.dtype)
        n = keys.shape[0]
        if n >= self.size:
            keys, n = keys[-self.size :], self.size
        index = (self.ptr + torch.arange(n, device=keys.device)) % self.size
        self.features[:, index] = keys.T
        self.ptr.copy_((self.ptr + n) % self.size)

    def ordered(self) -> torch.Tensor:
        """The queue's features oldest first (dim, K): for inspection and tests."""
        return torch.roll(self.features, shifts=-int(self.ptr), dims=1)
