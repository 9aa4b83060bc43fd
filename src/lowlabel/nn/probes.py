"""Frozen-feature linear probes of a pretrained backbone: per-pixel segmentation (mIoU) and image class (accuracy).

`backbone_maps` gives the C5 maps of a `lowlabel.nn` backbone (any module with `forward_features`) on uint8 images;
`segmentation_probe` fits a 1x1 conv on those maps (logits bilinearly upsampled to the masks) and `class_probe` a
linear classifier on the pooled maps, both by `fit_linear` (full-batch L-BFGS from zero weights: deterministic).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lowlabel.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lowlabel.engine.batches import embed
from lowlabel.metrics.segmentation import confusion_miou


class ImageNetFeatures(nn.Module):
    """uint8 images (N, 3, H, W) -> `backbone.forward_features` of the ImageNet-normalised float images."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        return self.backbone.forward_features((images.float() / 255.0 - mean) / std)


def backbone_maps(backbone: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """C5 maps (N, C, h, w) of uint8 images (N, 3, H, W): backbone in eval mode (its mode restored after),
    ImageNet-normalised input, `batch_size` images at a time, no autograd."""
    return embed(ImageNetFeatures(backbone), images, batch_size=batch_size)


def _standardise(train: torch.Tensor, test: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(dim=dims, keepdim=True), train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def fit_linear(x: torch.Tensor, y: torch.Tensor, n_classes: int, *, weight_decay: float = 1e-4,
               max_iter: int = 100) -> nn.Linear:
    """Multinomial logistic regression x (N, C) -> y (N,) by full-batch L-BFGS (strong Wolfe line search) on
    mean cross-entropy + weight_decay/2 * ||W||^2, from zero weights (so the fit is deterministic)."""
    linear = nn.Linear(x.shape[1], n_classes).to(device=x.device, dtype=x.dtype)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(linear(x), y) + 0.5 * weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return linear.requires_grad_(False)


def upsampled_pixels(maps: torch.Tensor, size: tuple[int, int], per_image: int, seed: int) -> tuple[torch.Tensor,
                                                                                                    torch.Tensor]:
    """Features of `per_image` random pixels of each image, bilinearly upsampled from maps (N, C, h, w) to `size`
    (align_corners=False, as F.interpolate). Returns (features (N * per_image, C), flat pixel index (N, per_image)).
    The pixels are drawn from a generator seeded by `seed` (the global generator is not touched).

    Since bilinear upsampling is linear and its weights sum to one, a 1x1 conv applied before upsampling gives at
    those pixels exactly the logits of the same linear map applied to these features.
    """
    gen = torch.Generator().manual_seed(seed)
    n, h, w = maps.shape[0], size[0], size[1]
    index = torch.stack([torch.randperm(h * w, generator=gen)[:per_image] for _ in range(n)]).to(maps.device)
    rows, cols = (index // w).to(maps.dtype), (index % w).to(maps.dtype)
    grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], dim=-1).unsqueeze(1)  # (N, 1, P, 2) x, y
    feats = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (N, C, 1, P)
    return feats.squeeze(2).permute(0, 2, 1).reshape(-1, maps.shape[1]), index


def segmentation_probe(train_maps: torch.Tensor, train_masks: torch.Tensor, test_maps: torch.Tensor,
                       test_masks: torch.Tensor, n_classes: int, *, pixels_per_image: int = 128,
                       seed: int = 0) -> float:
    """Test mIoU (`metrics.segmentation.confusion_miou`) of a 1x1 conv on frozen maps (N, C, h, w), bilinearly
    upsampled to the int64 masks (N, H, W) with values in [0, n_classes).

    Features are standardised per channel with training statistics. The conv is fitted by `fit_linear` on the
    per-pixel cross-entropy of `pixels_per_image` random pixels of every training image (exactly the upsampled-logit
    loss at those pixels, see `upsampled_pixels`); at test time the logits are upsampled and every pixel counts.
    """
    train_maps, test_maps = _standardise(train_maps, test_maps, (0, 2, 3))
    x, index = upsampled_pixels(train_maps, tuple(train_masks.shape[-2:]), pixels_per_image, seed)
    y = train_masks.flatten(1).gather(1, index).reshape(-1)
    linear = fit_linear(x, y, n_classes)
    conv = nn.Conv2d(x.shape[1], n_classes, 1).to(device=x.device, dtype=x.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None])
        conv.bias.copy_(linear.bias)

    def predict(chunk: torch.Tensor) -> torch.Tensor:
        return F.interpolate(conv(chunk), size=test_masks.shape[-2:], mode="bilinear", align_corners=False).argmax(1)

    return confusion_miou(embed(predict, test_maps, batch_size=128), test_masks, n_classes)


def class_probe(train_maps: torch.Tensor, train_labels: torch.Tensor, test_maps: torch.Tensor,
                test_labels: torch.Tensor, n_classes: int) -> float:
    """Test accuracy of a linear classifier (`fit_linear`) on globally average-pooled frozen maps (N, C, h, w),
    standardised per channel with training statistics; labels (N,) int64 in [0, n_classes)."""
    train_x, test_x = _standardise(train_maps.mean(dim=(2, 3)), test_maps.mean(dim=(2, 3)), (0,))
    linear = fit_linear(train_x, train_labels, n_classes)
    with torch.no_grad():
        return float((linear(test_x).argmax(1) == test_labels).float().mean())
