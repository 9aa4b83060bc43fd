"""The shapes world: scenes of coloured shapes on plain or textured backgrounds, with exact ground truth.

Sample i of a world with seed s is `generate_scene(np.random.default_rng([s, i]), cfg)`, so a seed gives byte-identical
scenes in any process or DataLoader worker. Field meanings, thresholds and the caption grammar: docs/data/shapes.md.
"""

from __future__ import annotations

import colorsys
import functools
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lowlabel.data.synth.base import SeededDataset
from lowlabel.data.synth.shapes_text import (
    COLOURS,
    FAMILY_OF_SHAPE,
    SHAPES,
    SIZES,
    Phrase,
    make_captions,
    relations,
    scene_similarity,
    scene_similarity_matrix,
)
from lowlabel.errors import LowlabelError
from lowlabel.report.figures import figure, save_figure

__all__ = [
    "COLOURS",
    "SHAPES",
    "SIZES",
    "Scene",
    "ShapeObject",
    "ShapesConfig",
    "ShapesDataset",
    "generate_scene",
    "preview",
    "scene_similarity",
    "scene_similarity_matrix",
]

SIZE_RADII = (0.1, 0.14, 0.19)  # circumradius of each size class, as a fraction of the image side (+-8% jitter)
_PALETTE_SOURCE = np.array(
    [(215, 40, 40), (40, 160, 60), (40, 80, 215), (235, 205, 30), (135, 55, 185), (245, 135, 25), (35, 195, 205),
     (240, 115, 180)], dtype=np.float32)  # fmt: skip


def _shift_palette(rgb: np.ndarray, hue: float = 0.02, sat: float = 0.7, val: float = 0.85) -> np.ndarray:
    """Target-domain palette: each colour's hue turned by `hue` turns, saturation and value scaled."""
    out = []
    for r, g, b in rgb / 255.0:
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        out.append(colorsys.hsv_to_rgb((h + hue) % 1.0, s * sat, v * val))
    return (np.array(out) * 255.0).astype(np.float32)


PALETTES = {"source": _PALETTE_SOURCE, "target": _shift_palette(_PALETTE_SOURCE)}


def _regular(m: int, r_out: float = 1.0, r_in: float | None = None, start: float = -90.0) -> np.ndarray:
    """Vertices of a regular m-gon (or an m-pointed star when r_in is given), first vertex at `start` degrees."""
    k = np.arange(m * (1 if r_in is None else 2))
    step = 360.0 / len(k)
    radius = np.full(len(k), r_out) if r_in is None else np.where(k % 2 == 0, r_out, r_in)
    ang = np.deg2rad(start + step * k)
    return np.stack([radius * np.cos(ang), radius * np.sin(ang)], 1)


def _edges(vertices: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sorted vertex angles a_k and, per angular sector k (vertex k-1 -> k), the half-plane n_k . p <= c_k that holds
    inside it, as 1-D arrays n_x, n_y, c of length m + 1 (entry m repeats entry 0: the sector past the last angle)."""
    ang = np.arctan2(vertices[:, 1], vertices[:, 0])
    order = np.argsort(ang)
    v, ang = vertices[order], ang[order]
    prev = np.roll(v, 1, axis=0)
    d = v - prev
    nx, ny = d[:, 1], -d[:, 0]
    c = nx * prev[:, 0] + ny * prev[:, 1]
    sign = np.where(c < 0, -1.0, 1.0)  # orient each edge so that the centre (origin) is inside
    wrap = np.r_[np.arange(len(v)), 0]
    return ang, (nx * sign)[wrap], (ny * sign)[wrap], (c * sign)[wrap]


_COORDS = np.arange(224, dtype=np.float64)  # pixel-centre coordinates, sliced per window


@functools.lru_cache(maxsize=8)
def _grid(S: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every pixel of an S x S image, (S, S) int64 each (read-only, shared)."""
    rows, cols = np.indices((S, S))
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


def _cross(w: float = 0.32) -> np.ndarray:
    """12 vertices of a plus sign with arm half-width w whose corners lie on the unit circle."""
    arm = np.array([(math.sqrt(1 - w * w), -w), (math.sqrt(1 - w * w), w), (w, w)])
    quarter = np.array([[0.0, 1.0], [-1.0, 0.0]])  # (x, y) -> (-y, x), a quarter turn
    return np.concatenate([arm @ np.linalg.matrix_power(quarter, k) for k in range(4)])


_POLYGONS = {
    "square": _regular(4, start=45.0),
    "rectangle": np.array([(0.9, -0.435), (0.9, 0.435), (-0.9, 0.435), (-0.9, -0.435)]),
    "cross": _cross(),
    "triangle": _regular(3),
    "star": _regular(5, 1.0, 0.45),
    "diamond": np.array([(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)]),
}
_POLYGON_EDGES = {name: _edges(v) for name, v in _POLYGONS.items()}


def _polygon_inside(u: np.ndarray, v: np.ndarray, name: str) -> np.ndarray:
    """Inside test for a polygon star-shaped about the origin: the ray at angle(p) leaves through one edge only."""
    ang, nx, ny, c = _POLYGON_EDGES[name]
    k = np.searchsorted(ang, np.arctan2(v, u))
    return nx[k] * u + ny[k] * v <= c[k]


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = 1.29 * u, 0.2 - 1.29 * v  # the curve (x^2+y^2-1)^3 = x^2 y^3, centred and scaled into the unit disc
    x2 = x * x
    t = x2 + y * y - 1
    return t * t * t <= x2 * y * y * y


_INSIDE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v <= 1,
    "ellipse": lambda u, v: u * u + (v / 0.55) ** 2 <= 1,
    "heart": _heart,
    **{name: (lambda u, v, name=name: _polygon_inside(u, v, name)) for name in _POLYGONS},
}


@dataclass
class ShapesConfig:
    """Generator settings. `single_object=True` forces one object per scene (hierarchy labels always present)."""

    size: int = 64
    min_objects: int = 1
    max_objects: int = 6
    domain: str = "source"
    single_object: bool = False
    n_captions: int = 3
    min_visible_fraction: float = 0.5
    min_visible_pixels: int = 10
    max_rotation: float = 25.0

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 224:
            raise LowlabelError(f"ShapesConfig.size={self.size}: choose an image side between 16 and 224")
        if not 1 <= self.min_objects <= self.max_objects <= 6:
            span = f"{self.min_objects}..{self.max_objects}"
            raise LowlabelError(f"ShapesConfig objects {span}: need 1 <= min_objects <= max_objects <= 6")
        if self.domain not in PALETTES:
            raise LowlabelError(f"ShapesConfig.domain='{self.domain}': use one of {', '.join(PALETTES)}")
        if self.n_captions < 1:
            raise LowlabelError(f"ShapesConfig.n_captions={self.n_captions}: ask for at least one caption")
        if not 0.0 < self.min_visible_fraction <= 1.0:
            raise LowlabelError(f"ShapesConfig.min_visible_fraction={self.min_visible_fraction}: use a value in (0, 1]")


@dataclass(frozen=True)
class ShapeObject:
    """One placed object: class indices into SHAPES/COLOURS/SIZES and its drawing geometry in pixels."""

    shape: int
    colour: int
    size: int
    centre: tuple[float, float]  # (x, y) of the unoccluded shape
    radius: float  # circumradius in pixels
    angle: float  # rotation in radians
    area: int  # pixels of the unoccluded shape

    def hierarchy(self) -> tuple[int, int, int]:
        """(coarse family, middle = shape, fine = shape * len(COLOURS) + colour)."""
        return FAMILY_OF_SHAPE[self.shape], self.shape, self.shape * len(COLOURS) + self.colour

    def words(self) -> str:
        """Canonical 'size colour shape' words, e.g. 'small red triangle'."""
        return f"{SIZES[self.size]} {COLOURS[self.colour]} {SHAPES[self.shape]}"


@dataclass
class Scene:
    """A generated scene; object j is the j-th drawn (later objects occlude earlier ones). Boxes are x0, y0, x1, y1
    with x1, y1 exclusive (x1 = last visible column + 1)."""

    image: np.ndarray  # (H, W, 3) uint8
    instance_map: np.ndarray  # (H, W) int64, 0 = background, j + 1 = object j
    semantic: np.ndarray  # (H, W) int64, 0 = background, shape + 1
    boxes: np.ndarray  # (n, 4) int64, tight bounds of the visible masks
    areas: np.ndarray  # (n,) int64 visible pixels
    centroids: np.ndarray  # (n, 2) float64 mean (x, y) of visible pixels
    objects: list[ShapeObject]
    relations: list[tuple[int, str, int]]
    captions: list[str]
    phrases: list[Phrase]
    hierarchy: tuple[int, int, int] | None  # for one-object scenes, else None
    domain: str

    @property
    def instance_masks(self) -> np.ndarray:
        """(n, H, W) bool visible pixels of each object (computed from `instance_map` on access)."""
        return self.instance_map[None] == np.arange(1, len(self.objects) + 1)[:, None, None]

    def scene_graph(self) -> dict:
        """JSON-friendly scene graph: objects with attribute names, relations as [subject, predicate, object]."""
        objects = [{"shape": SHAPES[o.shape], "colour": COLOURS[o.colour], "size": SIZES[o.size]} for o in self.objects]
        return {"objects": objects, "relations": [list(r) for r in self.relations]}


def _place(rng: np.random.Generator, cfg: ShapesConfig) -> tuple[list[ShapeObject], np.ndarray]:
    """Draw objects one on top of another; a candidate that would leave any object (or itself) too little visible
    area, or repeat a (shape, colour) pair, is rejected. Returns the objects and the owner map (-1 = background)."""
    S = cfg.size
    lo, hi = cfg.min_objects, cfg.max_objects
    n_target = 1 if cfg.single_object else lo + int(rng.random() * (hi - lo + 1))
    owner = np.full((S, S), -1, dtype=np.int16)
    objects: list[ShapeObject] = []
    used: set[tuple[int, int]] = set()
    visible: list[int] = []
    need: list[float] = []
    for _ in range(40 * n_target):
        if len(objects) == n_target:
            break
        u = rng.random(7).tolist()
        shape, colour, size = int(u[0] * len(SHAPES)), int(u[1] * len(COLOURS)), int(u[2] * len(SIZES))
        radius = SIZE_RADII[size] * S * (0.92 + 0.16 * u[3])
        cx, cy = radius + u[4] * (S - 1 - 2 * radius), radius + u[5] * (S - 1 - 2 * radius)
        angle = math.radians((2 * u[6] - 1) * cfg.max_rotation)
        if (shape, colour) in used:
            continue
        x0, x1 = max(0, int(cx - radius - 1)), min(S, int(cx + radius) + 2)
        y0, y1 = max(0, int(cy - radius - 1)), min(S, int(cy + radius) + 2)
        cos, sin = math.cos(angle) / radius, math.sin(angle) / radius
        dx, dy = _COORDS[x0:x1] - cx, _COORDS[y0:y1, None] - cy
        mask = _INSIDE[SHAPES[shape]](dx * cos + dy * sin, dy * cos - dx * sin)
        window = owner[y0:y1, x0:x1]
        area = int(np.count_nonzero(mask))
        if area < cfg.min_visible_pixels:
            continue
        if objects:
            lost = np.bincount(window[mask] + 1, minlength=len(objects) + 1)[1:].tolist()
            remaining = [v - k for v, k in zip(visible, lost, strict=True)]
            if any(r < t for r, t in zip(remaining, need, strict=True)):
                continue
            visible = remaining
        window[mask] = len(objects)
        visible.append(area)
        need.append(max(cfg.min_visible_fraction * area, cfg.min_visible_pixels))
        used.add((shape, colour))
        objects.append(ShapeObject(shape, colour, size, (cx, cy), radius, angle, area))
    if len(objects) < cfg.min_objects:
        raise LowlabelError(f"could not fit {cfg.min_objects} objects in a {S}x{S} image: lower min_objects")
    return objects, owner


def _background(rng: np.random.Generator, S: int, domain: str, offset: float = 0.0) -> np.ndarray:
    """(3, S, S) float32 (+ offset): source = tinted grey with a smooth gradient; target adds a grating and blocky
    noise."""
    u = rng.random(10).tolist()
    base = np.float32(95 + 70 * u[0] + offset) + np.array(u[1:4], dtype=np.float32) * 16 - 8
    ramp = _COORDS[:S].astype(np.float32) / np.float32(S) - np.float32(0.5)
    shade = np.float32(60 * u[4] - 30) * ramp[None, :] + np.float32(60 * u[5] - 30) * ramp[:, None]
    if domain == "target":
        theta, period, phase, amp = np.pi * u[6], 3 + 3 * u[7], 2 * np.pi * u[8], 18 + 12 * u[9]
        freq = 2 * np.pi / period
        xs = _COORDS[:S]
        proj = (freq * np.cos(theta)) * xs[None, :] + (freq * np.sin(theta)) * xs[:, None] + phase
        shade += np.float32(amp) * np.sin(proj.astype(np.float32))
        block = max(2, S // 16)
        coarse = (rng.random((-(-S // block), -(-S // block)), dtype=np.float32) - np.float32(0.5)) * np.float32(48)
        shade += np.repeat(np.repeat(coarse, block, 0), block, 1)[:S, :S]
    return shade[None] + base[:, None, None]


def generate_scene(rng: np.random.Generator, cfg: ShapesConfig | None = None) -> Scene:
    """One scene with all ground truth, drawing every random number from `rng` (numpy only, no global state)."""
    cfg = cfg or ShapesConfig()
    S = cfg.size
    objects, owner = _place(rng, cfg)
    n = len(objects)
    inst = owner.astype(np.int64) + 1
    rows_idx, cols_idx = _grid(S)
    per_col = np.bincount((inst * S + cols_idx).ravel(), minlength=(n + 1) * S).reshape(n + 1, S)[1:]  # (n, W)
    per_row = np.bincount((inst * S + rows_idx).ravel(), minlength=(n + 1) * S).reshape(n + 1, S)[1:]  # (n, H)
    areas = per_col.sum(1)
    centroids = np.stack([per_col @ _COORDS[:S], per_row @ _COORDS[:S]], 1) / areas[:, None]
    cols, rows = per_col > 0, per_row > 0
    boxes = np.stack([cols.argmax(1), rows.argmax(1), S - cols[:, ::-1].argmax(1), S - rows[:, ::-1].argmax(1)], 1)
    boxes = boxes.astype(np.int64, copy=False)
    semantic = np.array([0] + [o.shape + 1 for o in objects], dtype=np.int64)[inst]

    # uniform pixel noise of std 3 (source) or 8 (target): amp * (U - 0.5); the -amp/2 and the +0.5 that makes the
    # final truncation a rounding are folded into the colours and the background
    amp = np.float32(2 * math.sqrt(3) * (3.0 if cfg.domain == "source" else 8.0))
    colours = np.zeros((n + 1, 3), dtype=np.float32)
    colours[1:] = PALETTES[cfg.domain][[o.colour for o in objects]] + (rng.random((n, 3)) * 24 - 12)
    colours += np.float32(0.5) - amp / 2
    bg = _background(rng, S, cfg.domain, offset=float(0.5 - amp / 2))
    img = np.where(inst > 0, np.take(colours.T, inst, axis=1), bg)  # (3, S, S)
    noise = rng.random((3, S, S), dtype=np.float32)
    noise *= amp
    img += noise
    np.clip(img, 0, 255.49, out=img)
    image = img.transpose(1, 2, 0).astype(np.uint8, order="C")

    triples = relations(centroids, areas, S)
    attrs = [(o.shape, o.colour, o.size) for o in objects]
    captions, phrases = make_captions(attrs, triples, cfg.domain, cfg.n_captions, rng)
    hierarchy = objects[0].hierarchy() if n == 1 else None
    return Scene(image, inst, semantic, boxes, areas, centroids, objects, triples, captions, phrases, hierarchy,
                 cfg.domain)  # fmt: skip


class ShapesDataset(SeededDataset):
    """`n` shapes scenes; item i is generated from `np.random.default_rng([seed, i])` on demand (nothing stored).

    Items are dicts of tensors that the default collate stacks (objects padded to M = cfg.max_objects, or 1 when
    single_object): image (3, H, W) float32 in [0, 1]; semantic (H, W) int64 (0 = background, shape + 1);
    instances (H, W) int64 (0 = background, j + 1 = object j); boxes (M, 4) float32 x0, y0, x1, y1 (x1, y1 exclusive,
    zero padding); labels / colours / sizes (M,) int64 class indices (-1 padding); n_objects () int64;
    shape () int64 = shape of the object with the largest visible area; hierarchy (3,) int64 (coarse, middle, fine),
    -1 when the scene has more than one object; domain () int64 (0 = source, 1 = target).
    Captions, phrases and relations: `scene(i)`.
    """

    def __init__(self, n: int, seed: int = 0, cfg: ShapesConfig | None = None) -> None:
        super().__init__(n, seed)
        self.cfg = cfg or ShapesConfig()

    def scene(self, i: int) -> Scene:
        """The raw Scene of item i (all ground truth, numpy arrays)."""
        return generate_scene(self.rng(i), self.cfg)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.scene(i)
        m = 1 if self.cfg.single_object else self.cfg.max_objects
        n = len(s.objects)
        ints = np.full(3 * m + 6, -1, dtype=np.int64)  # labels, colours, sizes (m each), n, shape, domain, hierarchy
        ints[: 3 * m].reshape(3, m)[:, :n] = np.array([[o.shape, o.colour, o.size] for o in s.objects]).T
        ints[3 * m : 3 * m + 3] = n, s.objects[int(s.areas.argmax())].shape, int(s.domain == "target")
        if s.hierarchy:
            ints[3 * m + 3 :] = s.hierarchy
        boxes = np.zeros((m, 4), dtype=np.float32)
        boxes[:n] = s.boxes
        image = np.multiply(s.image.transpose(2, 0, 1), np.float32(1 / 255), dtype=np.float32, order="C")
        t = torch.from_numpy(ints)
        return {
            "image": torch.from_numpy(image),
            "semantic": torch.from_numpy(s.semantic),
            "instances": torch.from_numpy(s.instance_map),
            "boxes": torch.from_numpy(boxes),
            "labels": t[:m],
            "colours": t[m : 2 * m],
            "sizes": t[2 * m : 3 * m],
            "n_objects": t[3 * m],
            "shape": t[3 * m + 1],
            "domain": t[3 * m + 2],
            "hierarchy": t[3 * m + 3 :],
        }


def preview(n: int = 8, out: Path = Path("shapes_preview.png"), seed: int = 0) -> Path:
    """PNG grid of n scenes (first half source, second half target domain), boxes drawn, first caption below."""
    if n < 1:
        raise LowlabelError(f"preview n={n}: ask for at least one scene")
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle

    half = (n + 1) // 2
    scenes = [ShapesDataset(half, seed).scene(i) for i in range(half)]
    scenes += [ShapesDataset(n - half, seed, ShapesConfig(domain="target")).scene(i) for i in range(n - half)]
    ncol = min(n, 4)
    nrow = -(-n // ncol)
    fig, axes = figure(nrow, ncol, figsize=(3.0 * ncol, 4.1 * nrow), squeeze=False)
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    for ax, (k, s) in zip(axes.ravel(), enumerate(scenes), strict=False):
        ax.imshow(s.image, interpolation="nearest")
        for j, (x0, y0, x1, y1) in enumerate(s.boxes):
            rect = Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.2)
            rect.set_path_effects(outline)
            ax.add_patch(rect)
            ax.text(x0, y0 - 1, str(j), color="white", fontsize=7, va="bottom", path_effects=outline)
        ax.set_title(f"#{k if k < half else k - half} {s.domain}", fontsize=9)
        ax.set_xlabel(textwrap.fill(s.captions[0], 38), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, out, dpi=100)
