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


IGNORE = 255  # mask value of pixels that neither train nor count (COCO crowd regions), as in mmsegmentation


@dataclass
class Labelled:
    """Labelled scenes for the fine-tuning evaluation: images uint8 (N, 3, H, W), masks int64 (N, H, W) with values
    in [0, n_classes) (0 = background) or IGNORE."""

    images: torch.Tensor
    masks: torch.Tensor
    n_classes: int

    def first(self, n: int) -> Labelled:
        """The first `n` scenes (a label budget)."""
        if not 0 < n <= len(self.images):
            raise LowlabelError(f"labelled={n}: asked for {n} labelled scenes; {len(self.images)} are available")
        return Labelled(self.images[:n], self.masks[:n], self.n_classes)


def shapes_labelled(n: int, *, size: int, seed: int) -> Labelled:
    """`n` multi-object scenes of shapes world `seed` with their semantic masks (10 classes: background + 9 shapes)."""
    world = shapes_images(n, size=size, seed=seed)
    return Labelled(world.images, world.semantic, world.n_seg_classes)


def finetune_worlds(seed: int, *, size: int = 64, n_train: int = 256, n_test: int = 400) -> tuple[Labelled, Labelled]:
    """The fine-tuning evaluation's shapes worlds for run seed `seed`: labelled scenes to fine-tune on (world
    10000 + seed; a budget of N takes the first N) and held-out test scenes (world 20000 + seed). The demo's seeds are
    0, 1, 2; choices were made on other worlds (pretraining 100, fine-tuning 10100, test 30100)."""
    return (shapes_labelled(n_train, size=size, seed=10_000 + seed),
            shapes_labelled(n_test, size=size, seed=20_000 + seed))


def _rle_mask(rle: dict, height: int, width: int) -> np.ndarray | None:
    """An uncompressed COCO RLE ({'counts': [int, ...], 'size': [h, w]}, column-major runs starting with 0s) as a
    bool (h, w) mask; None for compressed (string) counts, which need pycocotools."""
    counts = rle.get("counts")
    if not isinstance(counts, list):
        return None
    values = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)
    if values.size != height * width:
        return None
    return values.reshape(width, height).T


def _rasterise(anns: list[dict], category_index: dict[int, int], height: int, width: int) -> np.ndarray:
    """uint8 (h, w) semantic mask of one image's annotations: polygons filled with their class (largest first, so
    smaller objects stay on top), crowd regions (RLE) IGNORE; a compressed RLE marks its box IGNORE."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    crowd = np.zeros((height, width), dtype=bool)
    for ann in sorted(anns, key=lambda a: -float(a.get("area", 0.0))):
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            for poly in seg:
                if len(poly) >= 6:
                    draw.polygon([float(v) for v in poly], fill=category_index[ann["category_id"]])
        elif isinstance(seg, dict):
            mask = _rle_mask(seg, height, width)
            if mask is None:
                x, y, w, h = (round(float(v)) for v in ann["bbox"])
                crowd[max(y, 0) : y + h, max(x, 0) : x + w] = True
            else:
                crowd |= mask
    out = np.asarray(canvas, dtype=np.uint8).copy()
    out[crowd] = IGNORE
    return out


def resize_center_crop_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W) label mask -> int64 (size, size) with the geometry of `resize_center_crop`, nearest neighbour."""
    x = torch.from_numpy(mask)[None, None].float()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="nearest")
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[0, 0, top : top + size, left : left + size].long()


def coco_labelled(annotations: str | Path, images: str | Path, *, size: int) -> tuple[Labelled, list[str]]:
    """COCO instance annotations (`instances_*.json`) as semantic masks: every image with at least one annotation,
    sorted by id, resized (shorter side `size`) and centre-cropped like `ImageFolder`; class 0 = background, class
    i = the i-th category by id (names returned). Polygons are filled with Pillow (pycocotools' rasteriser can differ
    by a pixel along edges); crowd regions are IGNORE."""
    from lowlabel.files import read_json

    payload = read_json(annotations, "COCO annotation file")
    if not isinstance(payload, dict) or not all(k in payload for k in ("images", "annotations", "categories")):
        raise LowlabelError(f"{annotations}: not a COCO instances file (needs 'images', 'annotations', 'categories')")
    try:
        categories = sorted(payload["categories"], key=lambda c: c["id"])
        category_index = {c["id"]: i + 1 for i, c in enumerate(categories)}
        names = [str(c["name"]) for c in categories]
        per_image: dict[int, list[dict]] = {}
        for ann in payload["annotations"]:
            if ann["category_id"] not in category_index:
                raise LowlabelError(f"{annotations}: annotation {ann.get('id')} has unknown category "
                                    f"{ann['category_id']}")
            per_image.setdefault(ann["image_id"], []).append(ann)
        records = sorted((img for img in payload["images"] if img["id"] in per_image), key=lambda img: img["id"])
        shapes = [(str(img["file_name"]), int(img["height"]), int(img["width"])) for img in records]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise LowlabelError(f"{annotations}: malformed COCO record ({type(err).__name__}: {err})") from None
    if not records:
        raise LowlabelError(f"{annotations}: no image has an annotation")
    pics, masks = [], []
    for img, (file_name, height, width) in zip(records, shapes, strict=True):
        path = Path(images) / file_name
        try:
            pixels = read_image(path)
        except LowlabelError as err:
            raise LowlabelError(f"{err} (listed in {annotations})") from None
        if pixels.shape[:2] != (height, width):
            raise LowlabelError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} pixels, but {annotations} says "
                                f"{width}x{height}")
        try:
            mask = _rasterise(per_image[img["id"]], category_index, height, width)
        except (KeyError, TypeError, ValueError) as err:
            raise LowlabelError(f"{annotations}: malformed annotation of image {img['id']} "
                                f"({type(err).__name__}: {err})") from None
        pics.append(resize_center_crop(pixels, size))
        masks.append(resize_center_crop_mask(mask, size))
    return Labelled(torch.stack(pics), torch.stack(masks), len(categories) + 1), names
