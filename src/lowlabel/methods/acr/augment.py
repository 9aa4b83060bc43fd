"""ACR's weak and strong views as batched tensor operations (spec: Training, "Augmentations").

Images arrive as uint8 (B, 3, R, R): already resized so that the crop is R·224/256 of the side, as the official
Resize(256) + RandomCrop(224). Randomness comes from torch's global generator, which the Trainer seeds and
checkpoints, so a resumed run draws the same views. Outputs are float32 (B, 3, size, size) standardised with the
ImageNet mean and std (the official `Normalize`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lowlabel.errors import LowlabelError
from lowlabel.nn.imagenet import imagenet_normalize


def to_float(images: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) -> float32 in [0, 1] (float input is returned as float32 unchanged)."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def center(images: Tensor, size: int) -> Tensor:
    """The official test view: centre crop `size` (CenterCrop(224) after Resize(256)), then normalise."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise LowlabelError(f"images of {h}x{w} px are smaller than the crop size {size}")
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return imagenet_normalize(to_float(images[..., top:top + size, left:left + size]))


def random_crop_flip(images: Tensor, size: int) -> Tensor:
    """Weak view: RandomHorizontalFlip + RandomCrop(size), one draw per image; (B, 3, H, W) -> float in [0, 1]."""
    b, _, h, w = images.shape
    if h < size or w < size:
        raise LowlabelError(f"images of {h}x{w} px are smaller than the crop size {size}")
    top = torch.randint(0, h - size + 1, (b,))
    left = torch.randint(0, w - size + 1, (b,))
    flip = torch.rand(b) < 0.5
    ar = torch.arange(size)
    rows = (top[:, None] + ar)[:, :, None]  # (B, size, 1)
    cols = left[:, None] + torch.where(flip[:, None], size - 1 - ar, ar)  # (B, size)
    out = images.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols[:, None, :]]
    return to_float(out.permute(0, 3, 1, 2))


def weak(images: Tensor, size: int) -> Tensor:
    """Official weak augmentation: flip + random crop + normalise. uint8 (B, 3, R, R) -> (B, 3, size, size)."""
    return imagenet_normalize(random_crop_flip(images, size))


def _blend(a: Tensor, b: Tensor, factor: Tensor) -> Tensor:
    return (b + factor.view(-1, 1, 1, 1) * (a - b)).clamp(0.0, 1.0)


def strong(images: Tensor, size: int, p: float = 1.0 / 3.0, cutout: float = 0.5) -> Tensor:
    """Strong view: weak view, then a RandAugment-like set of photometric and geometric ops, each image getting each
    op with probability `p` at a random magnitude, then Cutout of side `cutout`·size filled with grey 0.5.

    Deviation: the official FixMatch RandAugment draws 2 of 14 PIL ops (p = 0.5, magnitude 1..9) per image; here 6
    batched ops (brightness, contrast, saturation, solarize, posterize, affine: rotate/shear/translate) are each
    applied with p = 1/3 (two on average), which keeps the view strong without a per-image PIL loop.
    """
    x = random_crop_flip(images, size)
    b = x.shape[0]

    def pick() -> Tensor:
        return torch.rand(b) < p

    def magnitude(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(b)

    one = torch.ones(b)
    x = _blend(x, torch.zeros_like(x), torch.where(pick(), magnitude(0.05, 1.95), one))  # brightness
    x = _blend(x, x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x), torch.where(pick(), magnitude(0.05, 1.95), one))
    gray = x.mean(dim=1, keepdim=True)
    x = _blend(x, gray.expand_as(x), torch.where(pick(), magnitude(0.05, 1.95), one))  # saturation
    threshold = torch.where(pick(), magnitude(0.5, 1.0), torch.full((b,), 2.0)).view(-1, 1, 1, 1)
    x = torch.where(x >= threshold, 1.0 - x, x)  # solarize
    levels = torch.where(pick(), 2.0 ** torch.randint(4, 9, (b,)).float(), torch.full((b,), 256.0)).view(-1, 1, 1, 1)
    x = torch.floor(x * (levels - 1) + 0.5) / (levels - 1)  # posterize
    geo = pick().float()
    angle = geo * magnitude(-30.0, 30.0) * math.pi / 180.0
    shear = geo * magnitude(-0.3, 0.3)
    shift = geo[:, None] * (torch.rand(b, 2) * 0.6 - 0.3)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin + shear, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x - 0.5, grid, align_corners=False, padding_mode="zeros") + 0.5  # grey fill outside
    side = max(1, round(cutout * size))
    cy, cx = torch.randint(0, size, (b,)), torch.randint(0, size, (b,))
    ar = torch.arange(size)
    inside_y = (ar[None] >= (cy - side // 2)[:, None]) & (ar[None] < (cy - side // 2 + side)[:, None])
    inside_x = (ar[None] >= (cx - side // 2)[:, None]) & (ar[None] < (cx - side // 2 + side)[:, None])
    hole = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]
    x = torch.where(hole, torch.full_like(x, 0.5), x)
    return imagenet_normalize(x.clamp(0.0, 1.0))
