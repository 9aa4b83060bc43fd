"""DyML's built-in worlds: three-level hierarchies on the shapes world and on scikit-learn's digits.

Both return uint8 images (N, C, S, S) and int64 labels (N, 3) as (fine, middle, coarse); `data.open_set_split`
then holds out whole fine classes for testing (fine classes unseen, middle and coarse classes seen, as in DyML).
- shapes: one object per image (lowlabel.data.synth.shapes, docs/data/shapes.md "Label hierarchy"): fine =
  shape + colour (72), middle = shape (9), coarse = family (3: round, angular, pointy). Position, size, rotation
  and colour jitter are nuisances.
- digits: scikit-learn's 1,797 real 8x8 digits, upsampled to 16x16: fine = handwriting style, one of 4 k-means
  clusters of each digit's pixels (40), middle = digit (10), coarse = stroke family (3: loops 0 6 8 9, straight
  strokes 1 4 7, open curves 2 3 5; `DIGIT_FAMILY`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lowlabel.errors import LowlabelError

WORLDS = ("shapes", "digits")
DIGIT_FAMILY = (0, 1, 2, 2, 1, 2, 0, 1, 0, 0)  # 0 loops, 1 straight strokes, 2 open curves
DIGIT_FAMILY_NAMES = ("loops", "straight", "open curves")
STYLES_PER_DIGIT = 4


def shapes_world(n: int, *, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` one-object shapes scenes of seed `seed` (sample i from default_rng([seed, i])): images uint8 (n, 3, size,
    size), labels (n, 3) = (shape * 8 + colour, shape, family)."""
    from lowlabel.data.synth.shapes import ShapesConfig, generate_scene

    cfg = ShapesConfig(size=size, single_object=True)
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    labels = np.empty((n, 3), dtype=np.int64)
    for i in range(n):
        scene = generate_scene(np.random.default_rng([seed, i]), cfg)
        images[i] = scene.image.transpose(2, 0, 1)
        labels[i] = scene.hierarchy[::-1]  # (coarse, middle, fine) -> (fine, middle, coarse)
    return images, labels


def digits_world(*, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images uint8 (1797, 1, size, size) (bilinear from 8x8, 0..16 scaled to 0..255),
    labels (1797, 3) = (4 * digit + style, digit, DIGIT_FAMILY[digit]); the styles are k-means clusters (k = 4,
    random_state `seed`) of each digit's 64 pixels, numbered by decreasing size."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels, digit = digits.data.astype(np.float64), digits.target.astype(np.int64)
    style = np.empty_like(digit)
    for d in range(10):
        rows = np.flatnonzero(digit == d)
        found = KMeans(STYLES_PER_DIGIT, n_init=4, random_state=seed).fit_predict(pixels[rows])
        rank = np.argsort(np.argsort(-np.bincount(found, minlength=STYLES_PER_DIGIT), kind="stable"), kind="stable")
        style[rows] = rank[found]
    images = torch.from_numpy(digits.images.astype(np.float32) * (255 / 16))[:, None]
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).numpy()
    labels = np.stack([STYLES_PER_DIGIT * digit + style, digit, np.array(DIGIT_FAMILY)[digit]], axis=1)
    return images, labels


def make_world(name: str, *, per_class: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The world `name`: shapes with about `per_class` images per fine class (72 classes), or the digits (fixed
    size; `per_class` unused)."""
    if name == "shapes":
        return shapes_world(72 * per_class, size=size, seed=seed)
    if name == "digits":
        return digits_world(size=size, seed=seed)
    raise LowlabelError(f"world '{name}': use one of {', '.join(WORLDS)}")
