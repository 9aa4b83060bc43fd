"""DenseCL networks: backbone + DenseCL neck (query), its momentum copy (key), two queues, Shuffle-BN under DDP."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lowlabel.engine.momentum import FeatureQueue, MomentumEncoder
from lowlabel.engine.runtime import all_gather, is_distributed
from lowlabel.errors import LowlabelError
from lowlabel.methods.densecl.losses import dense_correspondence, densecl_loss
from lowlabel.nn.heads import mlp
from lowlabel.nn.resnet import ARCHS, ResNet


class NeckOutput(NamedTuple):
    """Unnormalised neck outputs: g (B, D) global; r (B, D, S*S) dense; p (B, D) pooled dense (None: no dense head)."""

    g: torch.Tensor
    r: torch.Tensor | None
    p: torch.Tensor | None


class DenseCLNeck(nn.Module):
    """Global head (avg-pool -> Linear -> ReLU -> Linear) and dense head (1x1 conv -> ReLU -> 1x1 conv), no BN.

    Spec Architecture: Linear layers Kaiming-normal (fan_in, relu) with zero bias; the 1x1 convs keep PyTorch's
    default init, as the official init helper touches only nn.Linear. `num_grid` average-pools the map to
    num_grid x num_grid before the dense head (None keeps it). `dense=False` builds no dense head (MoCo-v2 mode).
    """

    def __init__(self, *, in_dim: int, hid_dim: int = 2048, out_dim: int = 128, num_grid: int | None = None,
                 dense: bool = True) -> None:
        super().__init__()
        self.global_head = mlp([in_dim, hid_dim, out_dim], norm=None)
        self.dense_head = mlp([in_dim, hid_dim, out_dim], norm=None, conv1x1=True) if dense else None
        self.grid: nn.Module = nn.AdaptiveAvgPool2d(num_grid) if num_grid else nn.Identity()
        for m in self.global_head.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> NeckOutput:
        """x: backbone map (B, C, H, W) -> NeckOutput (g (B, D), r (B, D, S*S), p (B, D))."""
        g = self.global_head(x.mean(dim=(2, 3)))
        if self.dense_head is None:
            return NeckOutput(g, None, None)
        y = self.dense_head(self.grid(x))
        return NeckOutput(g, y.flatten(2), y.mean(dim=(2, 3)))


class EncoderOutput(NamedTuple):
    """Backbone map flattened (B, C, S*S) (on the dense grid) and the neck outputs."""

    features: torch.Tensor
    neck: NeckOutput


def build_backbone(arch: str, *, small_stem: bool = False, width: int = 64) -> ResNet:
    """lowlabel.nn's `resnet18` / `resnet50` without classifier; `width` scales the stages (width, 2, 4, 8 x width;
    64 = torchvision's layout, smaller for CPU demos); key names are torchvision's at every width."""
    if arch not in ARCHS:
        raise LowlabelError(f"model.arch='{arch}' is unknown; use one of {', '.join(ARCHS)}")
    if width < 1:
        raise LowlabelError(f"model.width={width}: give a positive base width (64 = torchvision's ResNet)")
    return ARCHS[arch](num_classes=0, small_stem=small_stem, width=width)


class DenseCLEncoder(nn.Module):
    """A ResNet (C5 map via forward_features, no classifier) followed by the DenseCL neck."""

    def __init__(self, *, arch: str = "resnet50", small_stem: bool = False, width: int = 64, hid_dim: int = 2048,
                 out_dim: int = 128, num_grid: int | None = None, dense: bool = True) -> None:
        super().__init__()
        self.backbone = build_backbone(arch, small_stem=small_stem, width=width)
        self.neck = DenseCLNeck(in_dim=self.backbone.feature_dim, hid_dim=hid_dim, out_dim=out_dim,
                                num_grid=num_grid, dense=dense)

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        """x (B, 3, H, W) -> EncoderOutput. With num_grid the backbone map is pooled to the same grid as the dense
        head so correspondences index dense-head locations (the official code breaks there; its configs use None)."""
        feat = self.backbone.forward_features(x)
        return EncoderOutput(self.neck.grid(feat).flatten(2), self.neck(feat))


class Keys(NamedTuple):
    """Normalised keys to enqueue after the optimizer step: global (B, D) and pooled dense (B, D) or None."""

    global_: torch.Tensor
    pooled: torch.Tensor | None


@torch.no_grad()
def shuffled_forward(encoder: nn.Module, images: torch.Tensor) -> EncoderOutput:
    """`encoder(images)` with the batch shuffled across ranks first and un-shuffled after (MoCo's Shuffle-BN).

    images: (B, 3, H, W) on every rank (same B). BatchNorm in the key encoder then sees a random mix of every rank's
    images, so its statistics cannot leak which key belongs to which query. Identity on a single process.
    """
    if not is_distributed():
        return encoder(images)
    batch, rank = images.shape[0], dist.get_rank()
    gathered = all_gather(images)
    perm = torch.randperm(gathered.shape[0], device=images.device)
    dist.broadcast(perm, src=0)
    out: EncoderOutput = encoder(gathered[perm[rank * batch : (rank + 1) * batch]])
    mine = torch.argsort(perm)[rank * batch : (rank + 1) * batch]

    def unshuffle(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else all_gather(t.contiguous())[mine]

    neck = NeckOutput(*(unshuffle(t) for t in out.neck))
    return EncoderOutput(unshuffle(out.features), neck)  # type: ignore[arg-type]


class DenseCL(nn.Module):
    """Query encoder, momentum key encoder, and the global/dense queues (each (out_dim, queue_size)).

    `forward(im_q, im_k, lam=, momentum=)` runs one DenseCL step's forward: it first moves the key encoder towards
    the query encoder (theta_k <- m theta_k + (1 - m) theta_q), then computes keys with the KEY encoder (Shuffle-BN
    under DDP) and queries with the query encoder, and returns the weighted losses and the keys; `enqueue(keys)` must
    run after the optimizer step. `dense=False` is MoCo-v2: no dense head, no dense queue, no correspondence.
    """

    def __init__(self, *, arch: str = "resnet50", small_stem: bool = False, width: int = 64, hid_dim: int = 2048,
                 out_dim: int = 128, num_grid: int | None = None, queue_size: int = 65536, temperature: float = 0.2,
                 dense: bool = True) -> None:
        super().__init__()
        self.dense, self.temperature = dense, temperature
        self.encoder_q = DenseCLEncoder(arch=arch, small_stem=small_stem, width=width, hid_dim=hid_dim,
                                        out_dim=out_dim, num_grid=num_grid, dense=dense)
        self.encoder_k = MomentumEncoder(self.encoder_q)
        self.queue_global = FeatureQueue(out_dim, queue_size)
        self.queue_dense = FeatureQueue(out_dim, queue_size) if dense else None

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor, *, lam: float = 0.5,
                momentum: float = 0.999) -> tuple[dict[str, torch.Tensor], Keys]:
        """im_q, im_k: (B, 3, H, W) the two views. Returns ({'loss_contra_single', 'loss_contra_dense'}, Keys);
        in MoCo-v2 mode only 'loss_contra_single'. Spec Training procedure and Losses 1-4."""
        if lam > 0 and not self.dense:
            raise LowlabelError(f"lambda={lam} needs the dense branch; build DenseCL with dense=True")
        self.encoder_k.update(self.encoder_q, momentum)
        q = self.encoder_q(im_q)
        k = shuffled_forward(self.encoder_k, im_k)
        g_q, g_k = F.normalize(q.neck.g, dim=1), F.normalize(k.neck.g, dim=1)
        if not self.dense:
            out = densecl_loss(g_q, g_k, self.queue_global.features, lam=0.0, temperature=self.temperature)
            return {"loss_contra_single": out.single}, Keys(g_k, None)
        assert self.queue_dense is not None and q.neck.r is not None and k.neck.r is not None
        match = dense_correspondence(q.features, k.features)
        r_q, r_k = F.normalize(q.neck.r, dim=1), F.normalize(k.neck.r, dim=1)
        out = densecl_loss(g_q, g_k, self.queue_global.features, r_q, r_k, match, self.queue_dense.features,
                           lam=lam, temperature=self.temperature)
        pooled = F.normalize(k.neck.p, dim=1)  # type: ignore[arg-type]
        return {"loss_contra_single": out.single, "loss_contra_dense": out.dense}, Keys(g_k, pooled)

    @torch.no_grad()
    def enqueue(self, keys: Keys) -> None:
        """Append this step's keys (all ranks' keys under DDP) to both queues: after the optimizer step."""
        self.queue_global.enqueue(keys.global_)
        if self.queue_dense is not None and keys.pooled is not None:
            self.queue_dense.enqueue(keys.pooled)
