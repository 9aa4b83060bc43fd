"""DyML's networks: an embedding head on any backbone's features, and the CSL proxies (spec "Architecture")."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lowlabel.errors import LowlabelError
from lowlabel.methods.dyml.losses import csl_loss, proxy_hierarchy

POOLS = ("avg", "max")


class EmbeddingHead(nn.Module):
    """Pooled feature -> optional LayerNorm (no affine) -> Linear -> L2-normalised embedding.

    Input (B, C, H, W) feature map (pooled here) or (B, C) already-pooled features; output (B, dim), unit rows.
    Defaults follow the [H] DyML setting (average pool, LayerNorm, 512-d); the official stub is `pool="max"`,
    `layer_norm=False`.
    """

    def __init__(self, *, in_features: int, dim: int = 512, pool: str = "avg", layer_norm: bool = True) -> None:
        super().__init__()
        if pool not in POOLS:
            raise LowlabelError(f"pool='{pool}': use one of {', '.join(POOLS)}")
        self.pool = pool
        self.norm: nn.Module = nn.LayerNorm(in_features, elementwise_affine=False) if layer_norm else nn.Identity()
        self.fc = nn.Linear(in_features, dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() == 4:
            features = features.mean((2, 3)) if self.pool == "avg" else features.amax((2, 3))
        elif features.dim() != 2:
            raise LowlabelError(f"features of shape {tuple(features.shape)}: give (B, C, H, W) or (B, C)")
        return F.normalize(self.fc(self.norm(features)), dim=1)


class EmbeddingNet(nn.Module):
    """Backbone + `EmbeddingHead`: images -> (B, dim) unit embeddings.

    backbone: any module; its `forward_features` (the last feature map, as lowlabel's ResNet has) is used when it
    exists, else its forward; in_features: the channels it gives (ResNet-34: 512).
    """

    def __init__(self, *, backbone: nn.Module, in_features: int, dim: int = 512, pool: str = "avg",
                 layer_norm: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = EmbeddingHead(in_features=in_features, dim=dim, pool=pool, layer_norm=layer_norm)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = getattr(self.backbone, "forward_features", self.backbone)(images)
        return self.head(features)


class CSLProxies(nn.Module):
    """CSL's learnable proxies, one per fine training class, and each class's coarser labels.

    train_labels: (T, L) integer training labels, fine first, fine classes 0..P-1; dim: embedding width. `weight`
    (P, dim) is initialised U(-1/√dim, 1/√dim) (nn.Linear's rule, as [H]) from a local generator seeded with `seed`,
    so the global RNG is untouched; the buffer `hierarchy` (P, L) holds row c = (c, Y(c)^middle, Y(c)^coarse).
    """

    def __init__(self, *, train_labels: torch.Tensor, dim: int, seed: int = 0) -> None:
        super().__init__()
        train_labels = torch.as_tensor(train_labels).long()
        if train_labels.dim() != 2 or train_labels.shape[0] == 0:
            raise LowlabelError(f"train_labels has shape {tuple(train_labels.shape)}; give (T, levels), fine first")
        n_proxies = int(train_labels[:, 0].max()) + 1
        self.register_buffer("hierarchy", proxy_hierarchy(train_labels, n_proxies))
        bound = 1.0 / math.sqrt(dim)
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.empty(n_proxies, dim).uniform_(-bound, bound, generator=generator))

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor, margins: Sequence[float] = (0.25, 0.35, 0.45),
             scale: float = 32.0) -> torch.Tensor:
        """`csl_loss` of embeddings (N, dim) with labels (N, L) against these proxies (scalar)."""
        return csl_loss(embeddings, labels, self.weight, self.hierarchy, margins=margins, scale=scale)
