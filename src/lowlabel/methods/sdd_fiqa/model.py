"""SDD-FIQA networks: a small face-recognition trunk for the built-in recogniser, an ArcFace-style margin head,
and the quality regressor (trunk + the official quality head: Flatten -> PReLU -> Dropout(0.5) -> Linear -> 1).

Deviation from the official code: the official trunks are IR-50 / MobileFaceNet on 112x112 crops (spec
"Architecture"); the built-in trunk is a 4-stage conv net for the small faces-world images so the demo runs on a CPU.
The quality head is the official one on the trunk's final feature map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout),
        nn.Conv2d(cout, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout),
    )


class FaceTrunk(nn.Module):
    """Conv trunk: (B, 3, S, S) in [-1, 1] -> feature map (B, 8*width, S/16, S/16). Four stride-2 stages."""

    def __init__(self, *, width: int = 16, image_size: int = 32) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(f"FaceTrunk: image_size must be a multiple of 16, got {image_size}")
        self.stages = nn.Sequential(_stage(3, width), _stage(width, 2 * width), _stage(2 * width, 4 * width),
                                    _stage(4 * width, 8 * width))
        self.feature_shape = (8 * width, image_size // 16, image_size // 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


class FaceEmbedder(nn.Module):
    """Recognition model: trunk -> BN -> Flatten -> Linear -> BN1d, an embedding (B, embed_dim) (not normalised)."""

    def __init__(self, *, width: int = 16, image_size: int = 32, embed_dim: int = 64) -> None:
        super().__init__()
        self.trunk = FaceTrunk(width=width, image_size=image_size)
        c, h, w = self.trunk.feature_shape
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.Flatten(), nn.Linear(c * h * w, embed_dim),
                                  nn.BatchNorm1d(embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class MarginHead(nn.Module):
    """ArcFace-style classifier: logits s * cos(theta + m) for the true class, s * cos(theta) otherwise.

    Input embeddings (B, D) and labels (B,); returns logits (B, n_classes). (Deng et al., ArcFace; used here only to
    train the built-in recogniser.)
    """

    def __init__(self, *, embed_dim: int, n_classes: int, scale: float = 16.0, margin: float = 0.3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, embed_dim) / math.sqrt(embed_dim))
        self.scale, self.margin = scale, margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(emb, dim=1) @ F.normalize(self.weight, dim=1).T
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        target = F.one_hot(labels, cos.shape[1]).bool()
        return self.scale * torch.where(target, torch.cos(theta + self.margin), cos)


class Recognizer(nn.Module):
    """Embedder plus margin head, trained with cross-entropy; forward(images, labels) -> logits."""

    def __init__(self, *, n_classes: int, width: int = 16, image_size: int = 32, embed_dim: int = 64) -> None:
        super().__init__()
        self.embedder = FaceEmbedder(width=width, image_size=image_size, embed_dim=embed_dim)
        self.margin_head = MarginHead(embed_dim=embed_dim, n_classes=n_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.margin_head(self.embedder(x), labels)


class QualityRegressor(nn.Module):
    """Trunk + official quality head (Flatten -> PReLU(C*H*W) -> Dropout(p) -> Linear(C*H*W, 1)); (B, 3, S, S) -> (B,).

    No sigmoid or clipping, as in the official code (scores are roughly 0..100 on training-like data).
    """

    def __init__(self, *, width: int = 16, image_size: int = 32, dropout: float = 0.5) -> None:
        super().__init__()
        self.trunk = FaceTrunk(width=width, image_size=image_size)
        features = math.prod(self.trunk.feature_shape)
        self.head = nn.Sequential(nn.Flatten(), nn.PReLU(features), nn.Dropout(dropout), nn.Linear(features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)).squeeze(1)

    def init_trunk_from(self, embedder: FaceEmbedder) -> None:
        """Copy the recogniser's trunk (spec: the whole trunk is initialised from the FR checkpoint)."""
        self.trunk.load_state_dict(embedder.trunk.state_dict())
