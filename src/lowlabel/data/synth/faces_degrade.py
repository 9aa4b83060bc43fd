"""Graded degradations of the faces world and the ground-truth quality computed from their strengths.

Every strength is normalised to [0, 1]: 0 means "not applied", 1 is the strongest setting (for all but JPEG,
strong enough to take a recogniser close to chance). The mapping to physical parameters is fixed (see
`DEGRADATIONS` and docs/data/faces.md) and scales with the image size, so a strength means the same at 64x64 and at
112x112. Degradations are applied in the order of a camera pipeline: occluder in the scene -> optical blur ->
sensor resolution -> sensor noise -> JPEG storage.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from lowlabel.errors import LowlabelError

DEGRADATIONS: tuple[str, ...] = ("occlusion", "blur", "lowres", "noise", "jpeg")
"""Names in order of application. Physical meaning of strength s (size = image side in pixels):
occlusion: one flat-coloured axis-aligned rectangle covering round(s * size^2) pixels;
blur: Gaussian blur, sigma = BLUR_SIGMA * s * size / 64 pixels (Pillow's three-box approximation: no BLAS threads);
lowres: box-downsample to round(size / (1 + LOWRES_FACTOR * s)) pixels, bilinear upsample back;
noise: additive Gaussian noise (`noise_field`), std = NOISE_STD * s in [0, 1] units, per pixel and channel;
jpeg: JPEG round trip at quality `jpeg_quality(s)` = round(JPEG_Q0 * (JPEG_Q1 / JPEG_Q0) ** s) (none when s = 0)."""

BLUR_SIGMA = 8.0
LOWRES_FACTOR = 15.0
NOISE_STD = 0.3
JPEG_Q0, JPEG_Q1 = 90, 5
QUALITY_CURVES: dict[str, tuple[float, float]] = {
    "occlusion": (0.16, 2.5), "blur": (0.57, 2.6), "lowres": (0.54, 2.3), "noise": (1.4, 2.1), "jpeg": (1.5, 3.2),
}  # fmt: skip
"""(h_k, n_k) of the factor f_k(s) = 1 / (1 + (s / h_k) ** n_k); h_k is the strength that alone halves the quality.
h_k is the geometric mean, n_k the mean, of the Hill curves fitted to the recognisability of two recognisers (PCA+LDA
trained on clean faces; a small CNN trained on the default mix), rounded: benchmarks/synth_faces.py --calibrate,
docs/data/faces.md."""


@dataclass(frozen=True)
class Degradation:
    """Strengths in [0, 1] of the five degradations plus the random choices they need (so rendering is pure).

    `occlusion_pos` places the patch's top-left corner as a fraction of the free range in (x, y);
    `occlusion_aspect` is the patch's width/height; `noise_seed` seeds the noise field.
    """

    occlusion: float = 0.0
    blur: float = 0.0
    lowres: float = 0.0
    noise: float = 0.0
    jpeg: float = 0.0
    occlusion_pos: tuple[float, float] = (0.5, 0.5)
    occlusion_aspect: float = 1.0
    occlusion_colour: tuple[float, float, float] = (0.5, 0.5, 0.5)
    noise_seed: int = 0

    def __post_init__(self) -> None:
        for name in DEGRADATIONS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise LowlabelError(f"degradation strength '{name}'={value} is outside [0, 1]; pass a value in [0, 1]")

    def strengths(self) -> dict[str, float]:
        """Strength of each degradation, keyed by the names in `DEGRADATIONS`."""
        return {name: float(getattr(self, name)) for name in DEGRADATIONS}


def quality(deg: Degradation) -> float:
    """Ground-truth quality q = prod_k f_k(s_k), f_k(s) = 1 / (1 + (s / h_k) ** n_k) (see QUALITY_CURVES).

    In (0, 1]; exactly 1 for a clean image; strictly decreasing in every strength s_k.
    """
    q = 1.0
    for name, (h, n) in QUALITY_CURVES.items():
        q /= 1.0 + (getattr(deg, name) / h) ** n
    return float(q)


def occlusion_box(deg: Degradation, size: int) -> tuple[int, int, int, int]:
    """Pixel box (top, left, height, width) of the occluding patch; its area is round(s * size^2) up to rounding."""
    area = deg.occlusion * size * size
    if area <= 0:
        return 0, 0, 0, 0
    w = min(size, max(1, round(np.sqrt(area * deg.occlusion_aspect))))
    h = min(size, max(1, round(area / w)))
    w = min(size, max(1, round(area / h)))
    left = round(deg.occlusion_pos[0] * (size - w))
    top = round(deg.occlusion_pos[1] * (size - h))
    return top, left, h, w


def jpeg_quality(s: float) -> int:
    """JPEG quality setting for strength s in (0, 1]: round(JPEG_Q0 * (JPEG_Q1 / JPEG_Q0) ** s), geometric in s."""
    return max(1, round(JPEG_Q0 * (JPEG_Q1 / JPEG_Q0) ** s))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    out = img * np.float32(255.0)
    out += np.float32(0.5)
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _normal_table(length: int) -> np.ndarray:
    """A fixed, read-only table of `length` standard normal float32 values (generator seed 0)."""
    table = np.random.default_rng(0).standard_normal(length, dtype=np.float32)
    table.flags.writeable = False
    return table


def noise_field(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise of `shape`: the window of a fixed table of at least 2^21 normals that starts at
    seed mod (table length - size + 1). Deterministic and about four times cheaper than a fresh generator."""
    n = int(np.prod(shape))
    table = _normal_table(1 << max(21, (2 * n - 1).bit_length()))
    start = seed % (len(table) - n + 1)
    return table[start : start + n].reshape(shape)


def degrade(img: np.ndarray, deg: Degradation) -> np.ndarray:
    """Apply the degradations of `deg` to a clean render: float (3, H, W) in [0, 1] -> uint8 (H, W, 3).

    Deterministic: all randomness is carried by `deg`. A clean `deg` only quantises to uint8.
    """
    size = img.shape[1]
    u8 = np.ascontiguousarray(_to_uint8(img).transpose(1, 2, 0))
    if deg.occlusion > 0:
        top, left, h, w = occlusion_box(deg, size)
        u8[top : top + h, left : left + w] = _to_uint8(np.asarray(deg.occlusion_colour, dtype=np.float32))
    if deg.blur > 0:
        u8 = np.asarray(Image.fromarray(u8).filter(ImageFilter.GaussianBlur(BLUR_SIGMA * deg.blur * size / 64.0)))
    if deg.lowres > 0:
        low = max(2, round(size / (1.0 + LOWRES_FACTOR * deg.lowres)))
        if low < size:
            pil = Image.fromarray(u8).resize((low, low), Image.Resampling.BOX)
            u8 = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
    if deg.noise > 0:
        noisy = noise_field(deg.noise_seed, u8.shape) * np.float32(NOISE_STD * deg.noise)
        noisy += u8 * np.float32(1.0 / 255.0)
        u8 = _to_uint8(noisy)
    if deg.jpeg > 0:
        buf = io.BytesIO()
        Image.fromarray(u8).save(buf, format="JPEG", quality=jpeg_quality(deg.jpeg))
        buf.seek(0)
        u8 = np.array(Image.open(buf).convert("RGB"))
    return u8 if u8.flags.writeable else u8.copy()


def sample_degradation(
    rng: np.random.Generator, clean_fraction: float, apply_prob: float, max_strengths: dict[str, float]
) -> Degradation:
    """Draw a degradation: clean with probability `clean_fraction`, else each kind independently with probability
    `apply_prob` (at least one), strength ~ U(0, max_strengths[kind]). Always consumes the same number of draws."""
    k = len(DEGRADATIONS)
    u = rng.random(2 * k + 8)
    kinds = u[:k] < apply_prob
    if not kinds.any():
        kinds[min(int(u[2 * k] * k), k - 1)] = True
    if u[2 * k + 1] < clean_fraction:
        kinds[:] = False
    return Degradation(
        **{name: float(u[k + j] * max_strengths[name]) if kinds[j] else 0.0 for j, name in enumerate(DEGRADATIONS)},
        occlusion_pos=(float(u[2 * k + 2]), float(u[2 * k + 3])),
        occlusion_aspect=float(np.exp(1.4 * u[2 * k + 4] - 0.7)),
        occlusion_colour=(float(u[2 * k + 5]), float(u[2 * k + 6]), float(u[2 * k + 7])),
        noise_seed=int(rng.integers(0, 2**62)),
    )
