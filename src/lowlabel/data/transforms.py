"""Augmentation pipelines on image tensors (kornia): batched, on the device of the input, one draw per image.

Pipelines take float images (B, 3, H, W) in [0, 1] and return (B, 3, size, size), normalised with the ImageNet
mean and std unless asked otherwise. Randomness comes from torch's global generator (seeded by the runtime), so a
seeded run draws the same views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import nn

from lowlabel.errors import LowlabelError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def blur_kernel_size(sigma_max: float) -> int:
    """Odd Gaussian kernel side covering +-3 sigma of the largest sigma drawn: 2 * ceil(3 * sigma_max) + 1."""
    return 2 * math.ceil(3.0 * sigma_max) + 1


def _pair(values: Sequence[float], name: str) -> tuple[float, float]:
    if len(values) != 2 or not values[0] <= values[1]:
        raise LowlabelError(f"{name}={list(values)}: give two numbers [low, high] with low <= high")
    return float(values[0]), float(values[1])


def moco_v2(
    size: int,
    *,
    crop_scale: Sequence[float] = (0.2, 1.0),
    jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_sigma: Sequence[float] = (0.1, 2.0),
    blur_p: float = 0.5,
    flip_p: float = 0.5,
    normalize: bool = True,
) -> nn.Sequential:
    """The MoCo-v2 view pipeline (as used by MoCo-v2, DenseCL): apply it twice to a batch for two views.

    Order: RandomResizedCrop(size, scale=crop_scale, ratio 3/4-4/3); with p=jitter_p ColorJitter(brightness,
    contrast, saturation, hue); grayscale with p=grayscale_p; with p=blur_p Gaussian blur, sigma ~ U(blur_sigma) in
    pixels of the output; horizontal flip with p=flip_p; normalisation by the ImageNet mean/std.
    Input (B, 3, H, W) float in [0, 1]; output (B, 3, size, size). Deviation from the official (PIL) pipeline: the
    blur is a separable Gaussian with a kernel of 2*ceil(3*sigma_max)+1 taps instead of PIL's box-approximated
    GaussianBlur(radius=sigma); colour jitter is kornia's ColorJitter (torchvision semantics, random order).
    """
    if size < 8:
        raise LowlabelError(f"augmentation size={size}: use an output side of at least 8 pixels")
    if len(jitter) != 4:
        raise LowlabelError(f"jitter={list(jitter)}: give four strengths [brightness, contrast, saturation, hue]")
    low, high = _pair(blur_sigma, "blur_sigma")
    steps: list[nn.Module] = [
        K.RandomResizedCrop((size, size), scale=_pair(crop_scale, "crop_scale"), align_corners=False),
        K.ColorJitter(*(float(j) for j in jitter), p=jitter_p),
        K.RandomGrayscale(p=grayscale_p),
        K.RandomGaussianBlur(blur_kernel_size(high), sigma=(low, high), p=blur_p),
        K.RandomHorizontalFlip(p=flip_p),
    ]
    if normalize:
        steps.append(K.Normalize(mean=torch.tensor(IMAGENET_MEAN), std=torch.tensor(IMAGENET_STD)))
    return nn.Sequential(*steps)


def normalize_only(size: int | None = None) -> nn.Sequential:
    """The evaluation pipeline: optional resize to (size, size), then ImageNet normalisation."""
    steps: list[nn.Module] = [K.Resize((size, size))] if size is not None else []
    steps.append(K.Normalize(mean=torch.tensor(IMAGENET_MEAN), std=torch.tensor(IMAGENET_STD)))
    return nn.Sequential(*steps)


@torch.no_grad()
def two_views(pipeline: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent draws of `pipeline` on `images` (B, 3, H, W) (uint8 is scaled to [0, 1] first)."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    if images.ndim != 4 or images.shape[1] != 3:
        raise LowlabelError(f"images of shape {tuple(images.shape)}: expected a batch (B, 3, H, W)")
    return pipeline(images), pipeline(images)
