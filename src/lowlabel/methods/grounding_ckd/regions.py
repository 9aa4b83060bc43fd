"""Region features of one image for the features file: the ImageNet MobileNetV2 backbone with RoI-align over the
given proposals, on the image resized to a long side (OpenCV reading and resizing). Both `prepare-coco` (Darknet
proposals) and `prepare` (any detector's proposals, or Darknet) go through here, so their features agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.methods.grounding_ckd.model import RegionFeatureExtractor


def opencv() -> object:
    """The cv2 module (the optional OpenCV package)."""
    return require("cv2", "geometry", "reading images and Darknet detectors (pip install 'opencv-python-headless<5')")


def backbone() -> RegionFeatureExtractor:
    """ImageNet MobileNetV2 (offline weights) with RoI-align 7 x 7 on its last feature map: 1,280-d regions."""
    from lowlabel.nn.mobilenet import mobilenet_v2

    return RegionFeatureExtractor(mobilenet_v2(pretrained=True, num_classes=0).eval())


def read_bgr(path: Path) -> np.ndarray:
    """The image at `path` as OpenCV reads it: (H, W, 3) uint8 BGR."""
    if not path.is_file():
        raise LowlabelError(f"{path}: image not found; the image names of the annotations must be files of the "
                            "images folder")
    image = opencv().imread(str(path))
    if image is None:
        raise LowlabelError(f"{path}: not a readable image")
    return image


@torch.no_grad()
def region_arrays(image_bgr: np.ndarray, boxes: np.ndarray, scores: np.ndarray, extractor: RegionFeatureExtractor,
                  num: int, long_side: int) -> tuple[np.ndarray, ...]:
    """One image and its proposals (n <= num, boxes (n, 4) pixels, class scores (n, C)) -> the features file's rows
    (features (num, D), boxes (num, 4), mask (num,), scores (num, C)), zero-padded past n: the backbone's
    RoI-aligned features on the image resized to `long_side` (ImageNet normalisation)."""
    from lowlabel.nn.imagenet import imagenet_normalize

    h, w = image_bgr.shape[:2]
    scale = long_side / max(h, w)
    small = opencv().resize(image_bgr, (round(w * scale), round(h * scale)))[:, :, ::-1].copy()
    tensor = imagenet_normalize(torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255.0)
    feats = extractor(tensor, torch.from_numpy(np.ascontiguousarray(boxes, np.float32) * scale)[None])[0].numpy()
    n = len(boxes)
    out_f = np.zeros((num, feats.shape[1]), np.float32)
    out_b, out_s = np.zeros((num, 4), np.float32), np.zeros((num, scores.shape[1]), np.float32)
    mask = np.zeros(num, bool)
    out_f[:n], out_b[:n], out_s[:n], mask[:n] = feats, boxes, scores, True
    return out_f, out_b, mask, out_s
