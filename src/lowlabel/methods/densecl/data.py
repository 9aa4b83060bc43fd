"""Images for DenseCL: a recursive image folder (the user's data) and the shapes world (built-in: unlabelled
images for pretraining, labelled scenes for the probes)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lowlabel.data.io import list_images, read_image
from lowlabel.errors import LowlabelError

FOLDER_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")


def check_image(path: Path) -> str | None:
    """None if `path` decodes as an image, else the reason. JPEGs are decoded in Pillow's reduced-size draft mode
    (fast, still reads every byte of the stream); other formats are decoded fully."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))
            img.load()
    except Exception as err:  # Pillow raises many types for bad files: every one means "unreadable"
        return f"{type(err).__name__}: {err}"
    return None


@dataclass
class ScanResult:
    """Readable images (sorted) and the unreadable ones with their reasons."""

    paths: list[Path]
    bad: list[tuple[Path, str]]


def scan_folder(root: str | Path, *, skip_bad: bool = False) -> ScanResult:
    """Every jpg/jpeg/png/webp under `root` (recursive, sorted), each checked once up front.

    A file that does not decode raises LowlabelError naming it, unless `skip_bad`: then it is left out and listed in
    `bad` (the caller logs the count and the names). An empty folder is an error.
    """
    paths = list_images(root, recursive=True, exts=FOLDER_EXTS)
    if not paths:
        raise LowlabelError(f"{root}: no .jpg/.jpeg/.png/.webp images found (searched sub-folders too)")
    good, bad = [], []
    for path in paths:
        reason = check_image(path)
        if reason is None:
            good.append(path)
        elif skip_bad:
            bad.append((path, reason))
        else:
            raise LowlabelError(f"{path}: unreadable image ({reason}); delete or fix it, or pass --skip-bad")
    if not good:
        raise LowlabelError(f"{root}: none of the {len(paths)} images could be read")
    return ScanResult(good, bad)


def resize_center_crop(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> uint8 (3, size, size): shorter side resized to `size` (antialiased bilinear), centre crop."""
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[0, :, top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8)


class ImageFolder(Dataset):
    """Images of a scanned folder as uint8 tensors (3, load_size, load_size); the augmentation runs later on the
    device. Deviation: the official pipeline crops the original image; here the random resized crop is taken from
    the image resized (shorter side = load_size) and centre-cropped to a square, so batches can be stacked."""

    def __init__(self, paths: list[Path], load_size: int = 256) -> None:
        self.paths, self.load_size = paths, load_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return resize_center_crop(read_image(self.paths[i]), self.load_size)


@dataclass
class ShapesImages:
    """The shapes world at one size: images uint8 (N, 3, S, S), semantic (N, S, S) int64 (0 = background,
    shape + 1) and the class of the largest object (N,) int64."""

    images: torch.Tensor
    semantic: torch.Tensor
    shape: torch.Tensor

    @property
    def n_seg_classes(self) -> int:
        from lowlabel.data.synth.shapes import SHAPES

        return len(SHAPES) + 1


@functools.lru_cache(maxsize=8)
def shapes_images(n: int, *, size: int = 32, seed: int = 0, single_object: bool = False) -> ShapesImages:
    """`n` scenes of the shapes world rendered at `size` px (generation is numpy per scene; not a training hot path),
    1-6 objects each or, with `single_object`, one. The last few worlds are cached (the demo trains two models on one
    world): treat the tensors as read-only."""
    from lowlabel.data.synth.shapes import ShapesConfig, ShapesDataset

    dataset = ShapesDataset(n, seed=seed, cfg=ShapesConfig(size=size, single_object=single_object))
    items = [dataset[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items]).mul(255).round().to(torch.uint8)
    return ShapesImages(images, torch.stack([it["semantic"] for it in items]),
                        torch.stack([it["shape"] for it in items]))


def probe_data(size: int, seed: int, *, single_object: bool = False, n_train: int = 800,
               n_test: int = 400) -> tuple[ShapesImages, ShapesImages]:
    """Labelled train/test scenes for the frozen-feature probes, from worlds seeded apart from the pretraining images
    (seed): multi-object scenes for segmentation, one-object scenes (`single_object`) for the class probe."""
    offset = 40_000 if single_object else 0
    return (shapes_images(n_train, size=size, seed=10_000 + offset + seed, single_object=single_object),
            shapes_images(n_test, size=size, seed=20_000 + offset + seed, single_object=single_object))
