"""ImageNet input conventions shared by every ImageNet-pretrained backbone: mean/std and the eval preprocessing.

The numbers are the ones the torchvision ImageNet weights were trained with (RGB in [0, 1], then per-channel
standardisation); the eval pipeline is theirs too: resize the shorter side to 256, centre-crop 224.
No class names: no installed package ships the 1000 ImageNet labels, so results are class indices (0-999).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
NUM_IMAGENET_CLASSES = 1000


def imagenet_normalize(images: Tensor) -> Tensor:
    """Standardise RGB images in [0, 1] with the ImageNet mean/std: (B, 3, H, W) or (3, H, W) -> same shape."""
    if images.shape[-3] != 3:
        raise ValueError(f"imagenet_normalize expects 3 RGB channels at dim -3, got shape {tuple(images.shape)}")
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(shape)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(shape)
    return (images - mean) / std


def imagenet_preprocess(image: np.ndarray | Tensor, *, resize: int = 256, crop: int = 224) -> Tensor:
    """The ImageNet eval transform: shorter side -> `resize` (bilinear, antialiased), centre `crop`, normalise.

    image: one RGB image, a uint8 array (H, W, 3) (as PIL/scikit-image/imageio give) or a float tensor (3, H, W)
    in [0, 1]. Returns (1, 3, crop, crop) float32, ready for the network.
    """
    if crop > resize:
        raise ValueError(f"imagenet_preprocess: crop {crop} is larger than the resized shorter side {resize}")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"imagenet_preprocess expects an (H, W, 3) RGB array, got shape {image.shape}")
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / scale
    else:
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"imagenet_preprocess expects a (3, H, W) tensor, got shape {tuple(image.shape)}")
        x = image.float()
    h, w = x.shape[1:]
    # shorter side -> resize, longer side scaled by the same factor, truncated as torchvision's Resize(int) does
    size = (resize, int(resize * w / h)) if h <= w else (int(resize * h / w), resize)
    x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = round((size[0] - crop) / 2.0), round((size[1] - crop) / 2.0)
    x = x[..., top:top + crop, left:left + crop]
    return imagenet_normalize(x)
