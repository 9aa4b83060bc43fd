"""The pytorch-metric-learning baselines: CosFace per level against its formula, Multi-Similarity, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lowlabel.errors import LowlabelError
from lowlabel.methods.dyml import baselines


def test_cosface_baselines_match_the_formula() -> None:
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(6, 4), dim=1)
    labels = torch.tensor([[0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 1, 1], [4, 2, 1], [0, 0, 0]])
    fine = baselines.fine_only("cosface", (5, 3, 2), dim=4, scale=32.0, margin=0.25)
    per_level = baselines.per_level_sum("cosface", (5, 3, 2), dim=4, margins=(0.25, 0.35, 0.45))
    assert set(fine(emb, labels)) == {"fine"}
    losses = per_level(emb, labels)
    assert set(losses) == {"fine", "middle", "coarse"}
    for level, (name, margin) in enumerate(zip(("fine", "middle", "coarse"), (0.25, 0.35, 0.45), strict=True)):
        weights = F.normalize(per_level.losses[level].W.detach(), dim=0)  # (D, C)
        cos = emb @ weights
        y = labels[:, level]
        logits = 32.0 * (cos - margin * F.one_hot(y, cos.shape[1]))
        assert losses[name].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    sum(losses.values()).backward()
    assert all(loss.W.grad is not None for loss in per_level.losses)


def test_multi_similarity_baseline_and_label_check() -> None:
    torch.manual_seed(1)
    emb = F.normalize(torch.randn(8, 4), dim=1).requires_grad_(True)
    labels = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0], [2, 1, 1], [2, 1, 1], [3, 1, 1], [3, 1, 1]])
    ms = baselines.per_level_sum("multi_similarity", (4, 2, 2), dim=4)
    out = ms(emb, labels)
    assert set(out) == {"fine", "middle", "coarse"} and all(math.isfinite(v.item()) for v in out.values())
    with pytest.raises(LowlabelError, match="CosFace needs"):
        baselines.fine_only("cosface", (3,), dim=4)(emb, labels)
    with pytest.raises(LowlabelError, match="baseline kind"):
        baselines.fine_only("triplet", (4,), dim=4)
