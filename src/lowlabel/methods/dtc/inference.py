"""Sliding-window inference of DTC (spec "Inference", `test_util.test_single_case`), with batched windows.

Windows of the training patch at stride (18, 18, 4); per axis ceil((dim - patch) / stride) + 1 windows starting at
min(stride * i, dim - patch); a volume smaller than the patch is zero-padded symmetrically (floor on the left) and
unpadded after. Scores are the mean of sigmoid(seg_logits) over the windows covering each voxel; prediction =
score > 0.5, then the largest 26-connected component. The level-set head is not used at test time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lowlabel.errors import LowlabelError
from lowlabel.metrics.segmentation import largest_component
from lowlabel.nn.fast import fold_batchnorm, prefer_channels_last
from lowlabel.nn.vnet import VNet

ProbFn = Callable[[torch.Tensor], torch.Tensor]


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis of length `size` >= `patch` (last one clamped to the border)."""
    if stride < 1:
        raise LowlabelError(f"stride={stride}: must be at least 1")
    n = math.ceil((size - patch) / stride) + 1
    return [min(stride * i, size - patch) for i in range(n)]


def sliding_window_probs(prob_fn: ProbFn, image: torch.Tensor, patch: Sequence[int], stride: Sequence[int],
                         batch_size: int = 2) -> torch.Tensor:
    """Averaged foreground probability of `image` (H, W, D) from `prob_fn` on windows of `patch` at `stride`.

    prob_fn maps (N, 1, *patch) to probabilities (N, 1, *patch); `batch_size` windows go through it at once.
    Returns float32 (H, W, D) on image's device. Same windows and averaging as the official test code.
    """
    if image.dim() != 3:
        raise LowlabelError(f"sliding window: image has shape {tuple(image.shape)}; need (H, W, D)")
    size = list(image.shape)
    pad = [max(p - s, 0) for s, p in zip(size, patch, strict=True)]
    if any(pad):  # F.pad takes (last axis left, right, ..., first axis left, right)
        spec = [v for p in reversed(pad) for v in (p // 2, p - p // 2)]
        image = F.pad(image, spec)
    padded = list(image.shape)
    starts = list(itertools.product(*(window_starts(s, p, st) for s, p, st in zip(padded, patch, stride,
                                                                                   strict=True))))
    score = torch.zeros(padded, dtype=torch.float32, device=image.device)
    count = torch.zeros(padded, dtype=torch.float32, device=image.device)
    for b in range(0, len(starts), batch_size):
        chunk = starts[b : b + batch_size]
        windows = [tuple(slice(a, a + p) for a, p in zip(s, patch, strict=True)) for s in chunk]
        batch = torch.stack([image[w] for w in windows])[:, None]
        probs = prob_fn(batch)[:, 0].float()
        for w, p in zip(windows, probs, strict=True):
            score[w] += p
            count[w] += 1
    score /= count
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, size, strict=True))
    return score[crop]


def model_prob_fn(model: VNet) -> ProbFn:
    """sigmoid of the segmentation head of a DTC V-Net in eval mode, without gradients, computed by an inference
    copy of `model` (BatchNorm folded into the convolutions, channels-last on CPU; `model` is left as it is)."""
    device = next(model.parameters()).device
    fast = prefer_channels_last(fold_batchnorm(model), device)

    def fn(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.sigmoid(fast.segment(batch))

    return fn


def segment_volume(model: VNet, image: np.ndarray, *, patch: Sequence[int], stride: Sequence[int],
                   scale: float = 1.0, threshold: float = 0.5, keep_largest: bool = True,
                   batch_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Segment one volume (H, W, D): returns (mask uint8 (H, W, D), probability float32 (H, W, D)).

    With scale < 1 the image is resampled by `scale` (trilinear) for the network and the probabilities are
    resampled back to (H, W, D) before thresholding; `patch` and `stride` are in the resampled grid.
    """
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
    if scale != 1.0:
        size = [max(1, round(s * scale)) for s in image.shape]
        x = F.interpolate(x[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]
    probs = sliding_window_probs(model_prob_fn(model), x, patch, stride, batch_size)
    if scale != 1.0:
        probs = F.interpolate(probs[None, None], size=list(image.shape), mode="trilinear", align_corners=False)[0, 0]
    probs_np = probs.cpu().numpy()
    mask = (probs_np > threshold).astype(np.uint8)
    if keep_largest:
        mask = largest_component(mask)
    return mask, probs_np
