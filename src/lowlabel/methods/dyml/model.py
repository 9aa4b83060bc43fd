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

    def __init__(self, *, train_labels: torch.Tensor | None = None, dim: int, seed: int = 0,
                 n_proxies: int | None = None, levels: int = 3) -> None:
        super().__init__()
        if train_labels is None:  # shapes only (e.g. before loading a checkpoint); `set_hierarchy` fills it
            if n_proxies is None or n_proxies < 1:
                raise LowlabelError("CSLProxies needs train_labels, or n_proxies >= 1 to be filled later")
            train_labels = torch.arange(n_proxies)[:, None].expand(n_proxies, levels) * torch.tensor(
                [1] + [0] * (levels - 1))
        train_labels = torch.as_tensor(train_labels).long()
        if train_labels.dim() != 2 or train_labels.shape[0] == 0:
            raise LowlabelError(f"train_labels has shape {tuple(train_labels.shape)}; give (T, levels), fine first")
        n_proxies = int(train_labels[:, 0].max()) + 1 if n_proxies is None else n_proxies
        self.register_buffer("hierarchy", proxy_hierarchy(train_labels, n_proxies))
        bound = 1.0 / math.sqrt(dim)
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.empty(n_proxies, dim).uniform_(-bound, bound, generator=generator))

    def set_hierarchy(self, train_labels: torch.Tensor) -> None:
        """Fill the `hierarchy` buffer from the (T, L) training label table (fine labels 0..P-1)."""
        table = proxy_hierarchy(torch.as_tensor(train_labels).long(), self.weight.shape[0])
        if table.shape != self.hierarchy.shape:
            raise LowlabelError(f"train_labels give a {tuple(table.shape)} hierarchy; the proxies hold "
                                f"{tuple(self.hierarchy.shape)}")
        self.hierarchy.copy_(table)

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor, margins: Sequence[float] = (0.25, 0.35, 0.45),
             scale: float = 32.0) -> torch.Tensor:
        """`csl_loss` of embeddings (N, dim) with labels (N, L) against these proxies (scalar)."""
        return csl_loss(embeddings, labels, self.weight, self.hierarchy, margins=margins, scale=scale)


class ConvNet(nn.Module):
    """A small CNN backbone for CPU runs: `blocks` x (3x3 conv, BatchNorm, ReLU, 2x2 max-pool), channels
    width x (1, 2, 4, 4, ...). `forward_features` gives the last map (B, feature_dim, H / 2^blocks, W / 2^blocks)."""

    def __init__(self, *, in_channels: int = 3, width: int = 32, blocks: int = 4) -> None:
        super().__init__()
        if blocks < 1 or width < 1:
            raise LowlabelError(f"ConvNet needs blocks >= 1 and width >= 1, got {blocks} and {width}")
        layers: list[nn.Module] = []
        channels = in_channels
        for b in range(blocks):
            out = width * min(2**b, 4)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            channels = out
        self.body = nn.Sequential(*layers)
        self.feature_dim = channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean((2, 3))


BACKBONES = ("resnet18", "convnet")


def build_backbone(name: str, *, in_channels: int, width: int, small_stem: bool = False,
                   blocks: int = 4) -> tuple[nn.Module, int]:
    """(backbone, feature channels): lowlabel's ResNet-18 (`width` 64 = torchvision's; `small_stem` for small
    images) or `ConvNet`. The official ResNet-34 is not in lowlabel.nn (docs/methods/dyml.md, deviations)."""
    if name == "resnet18":
        from lowlabel.nn.resnet import resnet18

        net = resnet18(num_classes=0, small_stem=small_stem, in_channels=in_channels, width=width)
        return net, net.feature_dim
    if name == "convnet":
        net = ConvNet(in_channels=in_channels, width=width, blocks=blocks)
        return net, net.feature_dim
    raise LowlabelError(f"backbone '{name}': use one of {', '.join(BACKBONES)}")


class DyMLModel(nn.Module):
    """Embedding network + training criterion in one module, so that everything needing a gradient (network, CSL
    proxies or the baselines' class weights) is reached through forward (DDP).

    forward(images) -> (B, dim) unit embeddings; forward(images, labels (B, 3)) -> {loss name: scalar}: "csl" for
    `criterion` a `CSLProxies`, one entry per level for a baselines.LevelLosses.
    """

    def __init__(self, *, net: EmbeddingNet, criterion: nn.Module, margins: Sequence[float] = (0.25, 0.35, 0.45),
                 scale: float = 32.0) -> None:
        super().__init__()
        self.net, self.criterion = net, criterion
        self.margins, self.scale = tuple(margins), float(scale)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor | dict:
        embeddings = self.net(images)
        if labels is None:
            return embeddings
        if isinstance(self.criterion, CSLProxies):
            return {"csl": self.criterion.loss(embeddings, labels, self.margins, self.scale)}
        return self.criterion(embeddings, labels)
