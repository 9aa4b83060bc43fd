"""Schedules as pure functions of the step (learning rates, ramp-ups, momentum, loss-weight warm-ups)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


def cosine(step: int, total: int, start: float = 1.0, end: float = 0.0) -> float:
    """Half-cosine from `start` at step 0 to `end` at step `total` (held at `end` after)."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def linear_warmup(step: int, warmup: int, start: float = 0.0, end: float = 1.0) -> float:
    """Linear ramp from `start` to `end` over `warmup` steps (held at `end` after)."""
    if warmup <= 0:
        return end
    t = min(max(step / warmup, 0.0), 1.0)
    return start + (end - start) * t


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(-5 (1 - t)^2) with t = step/length clipped to [0, 1] (Laine & Aila; used by mean-teacher style methods)."""
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def step_decay(step: int, milestones: Sequence[int], gamma: float = 0.1) -> float:
    """Multiplier gamma^(number of milestones <= step)."""
    return gamma ** sum(step >= m for m in milestones)


def warmup_cosine(step: int, warmup: int, total: int, end: float = 0.0) -> float:
    """Linear warm-up to 1 over `warmup` steps, then cosine to `end` at `total`."""
    if step < warmup:
        return linear_warmup(step, warmup, 0.0, 1.0)
    return cosine(step - warmup, total - warmup, 1.0, end)


def lr_scheduler(optimizer: torch.optim.Optimizer, factor: Callable[[int], float]) -> torch.optim.lr_scheduler.LambdaLR:
    """A torch LR scheduler that multiplies every base LR by `factor(step)`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
