"""V-Net (Milletari et al. 2016) as used by UA-MT, SASSNet and DTC: additive skips, BatchNorm, two 1x1x1 heads.

Layout of DTC's `networks/vnet_sdf.py` (spec "Architecture"): every conv is Conv3d(k=3, pad=1) + BatchNorm3d + ReLU;
down-sampling Conv3d(k=2, s=2) and up-sampling ConvTranspose3d(k=2, s=2), each + BatchNorm3d + ReLU; stages of
1, 2, 3, 3, 3 convs (encoder) and 3, 3, 2, 1 (decoder) at widths f, 2f, 4f, 8f, 16f; skips are ADDED. With f = 16,
one input and one output channel it has 9,448,866 parameters, as the official network.
"""

from __future__ import annotations

import torch
from torch import nn

from lowlabel.errors import LowlabelError


def _conv_stage(n_convs: int, c_in: int, c_out: int) -> nn.Sequential:
    """`n_convs` x (Conv3d k3 p1 + BatchNorm3d + ReLU); the first maps c_in -> c_out."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [nn.Conv3d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.BatchNorm3d(c_out),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _down(c_in: int, c_out: int) -> nn.Sequential:
    """Conv3d(k=2, s=2) + BatchNorm3d + ReLU: halves every spatial size."""
    return nn.Sequential(nn.Conv3d(c_in, c_out, 2, stride=2), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    """ConvTranspose3d(k=2, s=2) + BatchNorm3d + ReLU: doubles every spatial size."""
    return nn.Sequential(nn.ConvTranspose3d(c_in, c_out, 2, stride=2), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


def _add_skip(up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """up + skip, written into `up` when no gradient is recorded: at full resolution that saves allocating and
    filling a tensor as large as the input times the base width (about 50 ms of a 1.7 s two-window pass on CPU). With
    gradients it cannot be in place: the ReLU that produced `up` needs its output for the backward pass."""
    return up + skip if torch.is_grad_enabled() else up.add_(skip)


class VNet(nn.Module):
    """V-Net with a level-set head (tanh) and a segmentation head (logits), the network of DTC.

    Input (B, in_channels, H, W, D) with H, W, D divisible by 16; output `(level_set, seg_logits)`, both
    (B, n_classes, H, W, D), level_set in (-1, 1). `dropout` applies Dropout3d(p=0.5) to the bottleneck and to the
    last decoder features, like `has_dropout=True` in the official code (set it False for testing; `eval()` also
    disables it). `n_filters` is the base width (16 in the paper; 4-8 for CPU demos).
    """

    def __init__(self, *, in_channels: int = 1, n_classes: int = 1, n_filters: int = 16, dropout: bool = True) -> None:
        super().__init__()
        if min(in_channels, n_classes, n_filters) < 1:
            raise LowlabelError(f"VNet: in_channels={in_channels}, n_classes={n_classes}, n_filters={n_filters} "
                                "must all be positive")
        f = n_filters
        self.enc1, self.down1 = _conv_stage(1, in_channels, f), _down(f, 2 * f)
        self.enc2, self.down2 = _conv_stage(2, 2 * f, 2 * f), _down(2 * f, 4 * f)
        self.enc3, self.down3 = _conv_stage(3, 4 * f, 4 * f), _down(4 * f, 8 * f)
        self.enc4, self.down4 = _conv_stage(3, 8 * f, 8 * f), _down(8 * f, 16 * f)
        self.enc5 = _conv_stage(3, 16 * f, 16 * f)
        self.up5, self.dec4 = _up(16 * f, 8 * f), _conv_stage(3, 8 * f, 8 * f)
        self.up4, self.dec3 = _up(8 * f, 4 * f), _conv_stage(3, 4 * f, 4 * f)
        self.up3, self.dec2 = _up(4 * f, 2 * f), _conv_stage(2, 2 * f, 2 * f)
        self.up2, self.dec1 = _up(2 * f, f), _conv_stage(1, f, f)
        self.level_set_head = nn.Conv3d(f, n_classes, 1)
        self.seg_head = nn.Conv3d(f, n_classes, 1)
        self.dropout = nn.Dropout3d(p=0.5) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W, D) -> (tanh level set, segmentation logits), each (B, n_classes, H, W, D)."""
        y = self._decoded(x)
        return torch.tanh(self.level_set_head(y)), self.seg_head(y)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits only, (B, n_classes, H, W, D): what inference uses (the level-set head is a training
        signal), without the cost of the level-set head."""
        return self.seg_head(self._decoded(x))

    def _decoded(self, x: torch.Tensor) -> torch.Tensor:
        """The last decoder features (B, n_filters, H, W, D) that both heads read."""
        if x.dim() != 5 or any(s % 16 for s in x.shape[2:]):
            raise LowlabelError(f"VNet input has shape {tuple(x.shape)}; need (B, C, H, W, D) with H, W, D "
                                "divisible by 16 (pad or crop the patch, e.g. 112x112x80)")
        x1 = self.enc1(x)
        x2 = self.enc2(self.down1(x1))
        x3 = self.enc3(self.down2(x2))
        x4 = self.enc4(self.down3(x3))
        x5 = self.dropout(self.enc5(self.down4(x4)))
        y = self.dec4(_add_skip(self.up5(x5), x4))
        y = self.dec3(_add_skip(self.up4(y), x3))
        y = self.dec2(_add_skip(self.up3(y), x2))
        return self.dropout(self.dec1(_add_skip(self.up2(y), x1)))
