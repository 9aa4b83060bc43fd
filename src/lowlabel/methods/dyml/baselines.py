"""The paper's single-embedding baselines through pytorch-metric-learning, not re-implemented (spec "Baselines").

How the paper's baselines combine the three label levels is not published; as the spec asks, both variants exist:
"fine only" (one loss on the fine labels) and "per-level sum" (one loss per level, summed). Losses: CosFace
(`CosFaceLoss`, class weights per level) and Multi-Similarity (`MultiSimilarityLoss` with `MultiSimilarityMiner`,
the MS paper's defaults α 2, β 50, λ 0.5, ε 0.1).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import nn

from lowlabel.errors import LowlabelError
from lowlabel.extras import require

KINDS = ("cosface", "multi_similarity")
LEVEL_NAMES = ("fine", "middle", "coarse")


def _pml() -> tuple[ModuleType, ModuleType]:
    """pytorch-metric-learning's `losses` and `miners` modules, imported on first use (a heavy import)."""
    require("pytorch_metric_learning", "metric", "the DyML baselines")
    return (importlib.import_module("pytorch_metric_learning.losses"),
            importlib.import_module("pytorch_metric_learning.miners"))


class LevelLosses(nn.Module):
    """One pytorch-metric-learning loss per chosen label level; forward gives each level's loss by name.

    kind: "cosface" or "multi_similarity"; levels: label columns used (0 = fine); n_classes: classes per chosen
    level (CosFace needs labels 0..n-1 there); dim: embedding width; margins: CosFace margin per chosen level;
    scale: CosFace scale. The CosFace class weights are this module's parameters (train them with the network).
    """

    def __init__(self, *, kind: str, levels: Sequence[int], n_classes: Sequence[int], dim: int,
                 margins: Sequence[float] | None = None, scale: float = 32.0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise LowlabelError(f"baseline kind '{kind}': use one of {', '.join(KINDS)}")
        if not levels or len(n_classes) != len(levels):
            raise LowlabelError(f"levels {tuple(levels)} and n_classes {tuple(n_classes)} need one entry each")
        margins = tuple(margins) if margins is not None else (0.25,) * len(levels)
        if len(margins) != len(levels):
            raise LowlabelError(f"margins {margins} need one entry per level {tuple(levels)}")
        losses, miners = _pml()
        self.kind, self.levels, self.n_classes = kind, tuple(levels), tuple(n_classes)
        if kind == "cosface":
            self.losses = nn.ModuleList(
                losses.CosFaceLoss(num_classes=c, embedding_size=dim, margin=m, scale=scale)
                for c, m in zip(n_classes, margins, strict=True))
        else:
            self.losses = nn.ModuleList(losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5) for _ in levels)
            self.miner = miners.MultiSimilarityMiner(epsilon=0.1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """embeddings (N, D), labels (N, L) -> {level name: scalar loss} for the chosen levels."""
        out: dict[str, torch.Tensor] = {}
        for loss, level, n in zip(self.losses, self.levels, self.n_classes, strict=True):
            y = labels[:, level].long()
            if self.kind == "cosface" and (int(y.min()) < 0 or int(y.max()) >= n):
                raise LowlabelError(f"level {level} labels span {int(y.min())}..{int(y.max())}; CosFace needs "
                                    f"0..{n - 1} (remap them with data.contiguous_labels)")
            pairs = self.miner(embeddings, y) if self.kind == "multi_similarity" else None
            name = LEVEL_NAMES[level] if level < len(LEVEL_NAMES) else f"level{level}"
            out[name] = loss(embeddings, y, pairs) if pairs is not None else loss(embeddings, y)
        return out


def fine_only(kind: str, n_classes: Sequence[int], dim: int, *, scale: float = 32.0,
              margin: float = 0.25) -> LevelLosses:
    """The loss on fine labels only; n_classes: classes per level (fine, middle, coarse), only the first is used."""
    return LevelLosses(kind=kind, levels=(0,), n_classes=n_classes[:1], dim=dim, margins=(margin,), scale=scale)


def per_level_sum(kind: str, n_classes: Sequence[int], dim: int, *, scale: float = 32.0,
                  margins: Sequence[float] | None = None) -> LevelLosses:
    """One loss per level (sum the returned values); margins default to 0.25 at every level."""
    levels = tuple(range(len(n_classes)))
    return LevelLosses(kind=kind, levels=levels, n_classes=n_classes, dim=dim, margins=margins, scale=scale)
