"""The geometry world: point-cloud pairs and two-view image pairs with exact poses (serves SGP).

(a) `point_cloud_pair`: a scene of primitives (floor, wall, boxes, spheres, upright cylinders) sampled on its
surface; two partial views (half-spaces along a random horizontal direction) with independent Gaussian noise,
rigidly moved so that target[j] ~ R @ source[i] + t for every (i, j) in `correspondences`.
(b) `image_pair`: a textured piecewise-planar room (floor, ceiling, walls) with floating boards, seen by two
pinhole cameras with intrinsics K; camera-1 coordinates map to camera-2 coordinates by X2 = R @ X1 + t
(OpenCV axes: x right, y down, z forward). Each view is rendered by inverse warping: per plane, one homography
maps pixels to in-plane texture coordinates; a per-pixel depth test picks the nearest plane.
See docs/data/geometry.md for every field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from lowlabel.data.synth.base import SeededDataset
from lowlabel.errors import LowlabelError
from lowlabel.report.figures import figure, save_figure


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation (3, 3) by `angle` radians about `axis` (3,), any length."""
    return Rotation.from_rotvec(np.asarray(axis, float) / np.linalg.norm(axis) * angle).as_matrix()


def _random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Rotation about a uniformly random axis by an angle uniform in [0, max_deg] degrees."""
    return _axis_angle(rng.standard_normal(3), np.deg2rad(rng.uniform(0, max_deg)))


# ----------------------------------------------------------------------------------------------- point clouds


@dataclass(frozen=True)
class CloudConfig:
    """Point-cloud pairs; lengths in scene units (the floor is 2 x 2)."""

    n_points: int = 4096  # points sampled on the whole scene surface
    n_objects: tuple[int, int] = (3, 6)  # boxes/spheres/cylinders on the floor
    noise: float = 0.005  # std of the Gaussian noise per coordinate, drawn independently for each cloud
    overlap: tuple[float, float] = (0.4, 0.8)  # range of the overlap ratio (shared points / source points)
    source_frac: tuple[float, float] = (0.55, 0.75)  # share of the scene points in the source
    max_angle: float = 180.0  # relative rotation angle bound, degrees
    max_translation: float = 1.0  # relative translation: each coordinate uniform in [-max, max]

    def __post_init__(self) -> None:
        if (self.n_points < 64 or not 0 < self.overlap[0] <= self.overlap[1] <= 1 or self.noise < 0
                or not 0 < self.source_frac[0] <= self.source_frac[1] <= 1):
            raise LowlabelError(f"CloudConfig {self}: need n_points >= 64, 0 < overlap <= 1, 0 < source_frac <= 1, "
                                "noise >= 0")


@dataclass
class PointCloudPair:
    """source (N, 3), target (M, 3) float32; R (3, 3), t (3,) float64 with target ~ source @ R.T + t;
    overlap = shared / N; correspondences (C, 2) int64 rows (i, j): source[i] and target[j] are noisy copies of
    the same surface point; labels_source (N,), labels_target (M,) int64: primitive id (0 floor, 1 wall, 2..
    objects)."""

    source: np.ndarray
    target: np.ndarray
    R: np.ndarray
    t: np.ndarray
    overlap: float
    correspondences: np.ndarray
    labels_source: np.ndarray
    labels_target: np.ndarray


def _box(rng: np.random.Generator, k: int, size: np.ndarray) -> np.ndarray:
    """k points uniform on the surface of an axis-aligned box of `size` (3,) centred at 0."""
    faces = np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]]).repeat(2)
    face = rng.choice(6, size=k, p=faces / faces.sum())
    pts = rng.uniform(-0.5, 0.5, size=(k, 3)) * size
    axis = face // 2
    pts[np.arange(k), axis] = (2 * (face % 2) - 1) * size[axis] / 2
    return pts


def _cylinder(rng: np.random.Generator, k: int, radius: float, height: float) -> np.ndarray:
    """k points uniform on an upright cylinder (side and top cap; the bottom rests on the floor), base at z=0."""
    side, cap = 2 * np.pi * radius * height, np.pi * radius**2
    on_cap = rng.random(k) < cap / (side + cap)
    ang = rng.uniform(0, 2 * np.pi, k)
    r = np.where(on_cap, radius * np.sqrt(rng.random(k)), radius)
    z = np.where(on_cap, height, rng.uniform(0, height, k))
    return np.stack([r * np.cos(ang), r * np.sin(ang), z], axis=1)


def sample_scene(rng: np.random.Generator, cfg: CloudConfig) -> tuple[np.ndarray, np.ndarray]:
    """Surface points (n_points, 3) of a random scene and their primitive ids (n_points,), points spread by area.

    Primitives: floor z=0 over [-1, 1]^2 (id 0), wall x=-1, z in [0, 1] (id 1), then objects resting on the
    floor (ids 2..): boxes (yaw-rotated), spheres, upright cylinders. Points inside other objects are kept.
    """
    kinds = rng.integers(0, 3, size=rng.integers(cfg.n_objects[0], cfg.n_objects[1] + 1))
    dims = rng.uniform(0.12, 0.35, size=(len(kinds), 3))
    centres = rng.uniform(-0.75, 0.75, size=(len(kinds), 2))
    yaws = rng.uniform(0, np.pi, size=len(kinds))
    areas = [4.0, 2.0]
    for kind, (a, b, c) in zip(kinds, dims, strict=True):
        box = 2 * (4 * a * b + 4 * a * c + 4 * b * c)
        areas.append([box, 4 * np.pi * a**2, 2 * np.pi * a * 2 * c + np.pi * a**2][kind])
    counts = rng.multinomial(cfg.n_points, np.array(areas) / sum(areas))
    parts = [np.column_stack([rng.uniform(-1, 1, (counts[0], 2)), np.zeros(counts[0])]),
             np.column_stack([-np.ones(counts[1]), rng.uniform(-1, 1, counts[1]), rng.uniform(0, 1, counts[1])])]
    for i, kind in enumerate(kinds):
        k, (a, b, c) = counts[i + 2], dims[i]
        if kind == 0:
            local = _box(rng, k, 2 * np.array([a, b, c])) + np.array([0, 0, c])
        elif kind == 1:
            d = rng.standard_normal((k, 3))
            local = a * d / np.linalg.norm(d, axis=1, keepdims=True) + [0, 0, a]
        else:
            local = _cylinder(rng, k, a, 2 * c)
        yaw = _axis_angle(np.array([0.0, 0.0, 1.0]), yaws[i])
        parts.append(local @ yaw.T + [centres[i, 0], centres[i, 1], 0])
    return np.concatenate(parts), np.repeat(np.arange(len(areas)), counts)


def point_cloud_pair(rng: np.random.Generator, cfg: CloudConfig | None = None) -> PointCloudPair:
    """Two partial, noisy, rigidly moved views of one scene, with the exact transform and correspondences.

    Scene points are ranked along a random horizontal direction; the source takes the first a*K, the target
    the last K - b*K with b = a (1 - overlap), so the shared points are an `overlap` share of the source. The
    source is put in a uniformly random pose; target = (R @ clean_source_frame_points + t) + noise.
    """
    cfg = cfg or CloudConfig()
    points, labels = sample_scene(rng, cfg)
    k = len(points)
    phi = rng.uniform(0, 2 * np.pi)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(points @ np.array([np.cos(phi), np.sin(phi), 0.0]), kind="stable")] = np.arange(k)
    a = rng.uniform(*cfg.source_frac)
    n_src = round(a * k)
    start = round(n_src * (1 - rng.uniform(*cfg.overlap)))  # first rank in the target
    pose = Rotation.random(random_state=rng).as_matrix()  # uniform on SO(3)
    R = _random_rotation(rng, cfg.max_angle)
    t = rng.uniform(-cfg.max_translation, cfg.max_translation, size=3)
    src_ids = np.flatnonzero(rank < n_src)[rng.permutation(n_src)]
    tgt_ids = np.flatnonzero(rank >= start)[rng.permutation(k - start)]
    base = points @ pose.T + rng.uniform(-1, 1, size=3)
    source = base[src_ids] + rng.normal(0, cfg.noise, size=(n_src, 3))
    target = base[tgt_ids] @ R.T + t + rng.normal(0, cfg.noise, size=(k - start, 3))
    where_in_target = np.full(k, -1, dtype=np.int64)
    where_in_target[tgt_ids] = np.arange(len(tgt_ids))
    j = where_in_target[src_ids]
    corr = np.stack([np.flatnonzero(j >= 0), j[j >= 0]], axis=1).astype(np.int64)
    return PointCloudPair(source.astype(np.float32), target.astype(np.float32), R, t, len(corr) / n_src, corr,
                          labels[src_ids], labels[tgt_ids])


# ------------------------------------------------------------------------------------------------ image pairs


@dataclass(frozen=True)
class ImagePairConfig:
    """Two-view image pairs of a textured room; lengths in metres, angles in degrees."""

    height: int = 96
    width: int = 128
    focal: float = 0.9  # fx = fy = focal * width; principal point at the image centre
    n_boards: tuple[int, int] = (2, 4)  # floating textured rectangles in front of the back wall
    n_waves: int = 10  # sinusoids per plane texture
    baseline: tuple[float, float] = (0.15, 0.5)  # distance between the camera centres
    max_angle: float = 10.0  # relative rotation angle bound
    # dots on every plane (blob-like keypoints for SIFT): cell side as a share of the plane's distance; 0 = none
    dot_cell: float = 0.0

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8 or self.focal <= 0 or self.n_waves < 1 or self.dot_cell < 0:
            raise LowlabelError(f"ImagePairConfig {self}: need height, width >= 8, focal > 0, n_waves >= 1, "
                                "dot_cell >= 0")


@dataclass
class ImagePair:
    """img1, img2 uint8 (H, W, 3); depth1, depth2 float32 (H, W): z-depth (along the optical axis) of the surface
    seen at each pixel centre; planes1, planes2 int16 (H, W): id of that plane (0 floor, 1 ceiling, 2 left,
    3 right, 4 back, 5 rear wall, 6.. boards); K (3, 3); R (3, 3), t (3,): X2 = R @ X1 + t; normals (P, 3),
    offsets (P,): plane p is {X1 : normals[p] @ X1 = offsets[p]} in camera-1 coordinates. Pixel (row r, column c)
    has homogeneous coordinates (c, r, 1)."""

    img1: np.ndarray
    img2: np.ndarray
    depth1: np.ndarray
    depth2: np.ndarray
    planes1: np.ndarray
    planes2: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    normals: np.ndarray
    offsets: np.ndarray

    @property
    def essential(self) -> np.ndarray:
        """Essential matrix [t]_x R: x2n^T E x1n = 0 for normalised coordinates xn = K^-1 x."""
        tx = np.array([[0, -self.t[2], self.t[1]], [self.t[2], 0, -self.t[0]], [-self.t[1], self.t[0], 0]])
        return tx @ self.R

    @property
    def fundamental(self) -> np.ndarray:
        """Fundamental matrix K^-T E K^-1: x2^T F x1 = 0 for corresponding pixels."""
        k_inv = np.linalg.inv(self.K)
        return k_inv.T @ self.essential @ k_inv


@dataclass
class _Planes:
    """Planar patches in camera-1 coordinates: origin o, in-plane axes e1, e2, normal n (P, 3 each), half sizes
    (P, 2) (inf for the room), texture: base colour (P, 3), wave vectors (P, k, 2) per metre, phases (P, k),
    colour amplitudes (P, k, 3), shade (P,); dots: cell side (P,) in metres and a table (P, G, G, 6) per cell
    (mod G) of disc centre in the cell (2, in [0, 1]), radius (cell units) and colour offset (3: a dark or
    bright grey step plus a tint), or None."""

    o: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    half: np.ndarray
    base: np.ndarray
    waves: np.ndarray
    phases: np.ndarray
    amps: np.ndarray
    shade: np.ndarray
    dot_cell: np.ndarray | None = None
    dots: np.ndarray | None = None

    @property
    def n(self) -> np.ndarray:
        return np.cross(self.e1, self.e2)


DOT_TABLE = 61  # dot parameters repeat every 61 cells along each in-plane axis


def _room(rng: np.random.Generator, cfg: ImagePairConfig) -> _Planes:
    """A box room around camera 1 plus floating boards; each plane gets a sum-of-sinusoids texture whose
    wavelengths (0.06 to 0.3 times its distance to camera 1; the back wall's for the room) span several pixels;
    with cfg.dot_cell > 0, discs on a grid of cells dot_cell times that distance are added."""
    floor_y, ceil_y = rng.uniform(1.2, 1.6), -rng.uniform(1.2, 1.8)
    left, right, back = -rng.uniform(2.0, 3.0), rng.uniform(2.0, 3.0), rng.uniform(5.0, 7.0)
    ex, ey, ez = np.eye(3)
    o = [[0, floor_y, 0], [0, ceil_y, 0], [left, 0, 0], [right, 0, 0], [0, 0, back], [0, 0, -3.0]]
    e1 = [ex, ex, ez, ez, ex, ex]
    e2 = [ez, ez, ey, ey, ey, ey]
    half = [[np.inf, np.inf]] * 6
    for _ in range(rng.integers(cfg.n_boards[0], cfg.n_boards[1] + 1)):
        z = rng.uniform(1.8, 0.7 * back)
        centre = np.array([rng.uniform(-0.4, 0.4) * z, rng.uniform(-0.25, 0.25) * z, z])
        turn = _axis_angle(rng.standard_normal(3), np.deg2rad(rng.uniform(0, 45)))
        spin = _axis_angle(ez, rng.uniform(0, 2 * np.pi))
        frame = turn @ spin  # columns: in-plane axes and normal (roughly facing the camera)
        o.append(centre)
        e1.append(frame[:, 0])
        e2.append(frame[:, 1])
        half.append(rng.uniform(0.25, 0.7, size=2))
    o, e1, e2 = np.array(o, float), np.array(e1, float), np.array(e2, float)
    p, k = len(o), cfg.n_waves
    normal = np.cross(e1, e2)
    dist = np.maximum(np.linalg.norm(o, axis=1), 1.0)  # boards: distance of their centre
    dist[:6] = back  # room planes are seen up to the back wall
    wavelength = rng.uniform(0.06, 0.3, size=(p, k)) * dist[:, None]
    angle = rng.uniform(0, np.pi, size=(p, k))
    waves = np.stack([np.cos(angle), np.sin(angle)], axis=-1) / wavelength[..., None]
    amps = rng.uniform(-1, 1, size=(p, k, 3))
    amps *= 70 / np.abs(amps).sum(axis=1, keepdims=True)  # |texture - base| <= 70 per channel
    light = np.array([0.3, -0.8, -0.5]) / np.linalg.norm([0.3, -0.8, -0.5])
    planes = _Planes(o, e1, e2, np.array(half, float), rng.uniform(75, 180, size=(p, 3)), waves,
                     rng.uniform(0, 2 * np.pi, size=(p, k)), amps, 0.7 + 0.3 * np.abs(normal @ light))
    if cfg.dot_cell > 0:  # drawn last, so a world without dots keeps its bytes
        g = DOT_TABLE
        planes.dot_cell = cfg.dot_cell * dist
        brightness = rng.choice([-1.0, 1.0], size=(p, g, g, 1)) * rng.uniform(60, 110, size=(p, g, g, 1))
        planes.dots = np.concatenate([rng.uniform(0.1, 0.9, size=(p, g, g, 2)),
                                      rng.uniform(0.1, 0.4, size=(p, g, g, 1)),
                                      brightness + rng.uniform(-30, 30, size=(p, g, g, 3))], axis=-1)
    return planes


def _dot_colour(planes: _Planes, pid: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Colour offset (N, 3) of the dots at in-plane points uv (N, 2) of planes pid (N,): each cell of side
    dot_cell holds one disc (table entry of the cell index mod DOT_TABLE); zero outside the discs."""
    cell = planes.dot_cell[pid, None]
    scaled = np.nan_to_num(uv / cell, posinf=0.0, neginf=0.0)
    index = np.floor(scaled)
    g = index.astype(np.int64) % DOT_TABLE
    dot = planes.dots[pid, g[:, 0], g[:, 1]]  # (N, 6)
    inside = np.linalg.norm(scaled - index - dot[:, :2], axis=1) < dot[:, 2]
    return dot[:, 3:] * inside[:, None]


def _render(planes: _Planes, K: np.ndarray, R: np.ndarray, t: np.ndarray, h: int, w: int):
    """Render the planes seen by the camera X_cam = R @ X1 + t: (uint8 (h, w, 3), depth (h, w), plane id (h, w)).

    Pixel x maps to the ray C + lam * D, C = -R^T t, D = R^T K^-1 x (so lam is the z-depth). For plane p,
    H_p = [e1.(C-o) n^T + n.(o-C) e1^T; e2.(C-o) n^T + n.(o-C) e2^T; n^T] R^T K^-1 sends x to (u w, v w, w)
    with in-plane coordinates (u, v) and w = n.D; lam = n.(o-C) / w. The nearest lam > 0 inside the patch wins.
    """
    centre = -R.T @ t
    m = R.T @ np.linalg.inv(K)
    n = planes.n
    to_c = ((centre - planes.o) * n).sum(axis=1)  # n.(C - o) per plane
    rows = []
    for e in (planes.e1, planes.e2):
        rows.append(((centre - planes.o) * e).sum(axis=1)[:, None] * n - to_c[:, None] * e)
    homographies = np.stack([rows[0], rows[1], n], axis=1) @ m  # (P, 3, 3)
    cols, rws = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    pix = np.stack([cols.ravel(), rws.ravel(), np.ones(h * w)])  # (3, HW)
    uvw = homographies @ pix  # (P, 3, HW)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = -to_c[:, None] / uvw[:, 2]
        u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    inside = (lam > 1e-6) & (np.abs(u) <= planes.half[:, :1]) & (np.abs(v) <= planes.half[:, 1:])
    lam = np.where(inside, lam, np.inf)
    pid = np.argmin(lam, axis=0)
    idx = np.arange(h * w)
    depth = lam[pid, idx]
    uv = np.stack([u[pid, idx], v[pid, idx]], axis=1)  # (HW, 2)
    phase = np.einsum("nkd,nd->nk", planes.waves[pid], uv) * 2 * np.pi + planes.phases[pid]
    colour = planes.base[pid] + np.einsum("nkc,nk->nc", planes.amps[pid], np.cos(phase))
    if planes.dots is not None:
        colour = colour + _dot_colour(planes, pid, uv)
    img = np.clip(np.rint(colour * planes.shade[pid, None]), 0, 255).astype(np.uint8)
    return img.reshape(h, w, 3), depth.reshape(h, w).astype(np.float32), pid.reshape(h, w).astype(np.int16)


def image_pair(rng: np.random.Generator, cfg: ImagePairConfig | None = None) -> ImagePair:
    """Two views of a random textured room: camera 2 sits `baseline` from camera 1 (mostly sideways) and is
    rotated by at most `max_angle` degrees; both rendered at (height, width) with the same K."""
    cfg = cfg or ImagePairConfig()
    planes = _room(rng, cfg)
    f = cfg.focal * cfg.width
    K = np.array([[f, 0, (cfg.width - 1) / 2], [0, f, (cfg.height - 1) / 2], [0, 0, 1.0]])
    direction = rng.standard_normal(3) * [1.0, 0.4, 0.4]
    centre2 = direction / np.linalg.norm(direction) * rng.uniform(*cfg.baseline)
    R = _random_rotation(rng, cfg.max_angle)
    t = -R @ centre2
    img1, depth1, planes1 = _render(planes, K, np.eye(3), np.zeros(3), cfg.height, cfg.width)
    img2, depth2, planes2 = _render(planes, K, R, t, cfg.height, cfg.width)
    normals = planes.n
    return ImagePair(img1, img2, depth1, depth2, planes1, planes2, K, R, t, normals, (normals * planes.o).sum(1))


# ------------------------------------------------------------------------------------------ datasets, preview


class PointCloudPairs(SeededDataset):
    """Torch view: item i = point_cloud_pair(default_rng([seed, i]), cfg) as a dict of tensors (float32 clouds,
    float64 R and t, int64 correspondences, float overlap). Sizes vary: use batch_size=1 or a list collate."""

    def __init__(self, n: int, seed: int = 0, cfg: CloudConfig | None = None) -> None:
        super().__init__(n, seed)
        self.cfg = cfg or CloudConfig()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pair = point_cloud_pair(self.rng(index), self.cfg)
        return {k: torch.as_tensor(v) for k, v in vars(pair).items()}


class ImagePairs(SeededDataset):
    """Torch view: item i = image_pair(default_rng([seed, i]), cfg) as tensors; img1/img2 float32 (3, H, W) in
    [0, 1], depth float32 (H, W), planes int64 (H, W), K/R/t float64, F float64 (3, 3)."""

    def __init__(self, n: int, seed: int = 0, cfg: ImagePairConfig | None = None) -> None:
        super().__init__(n, seed)
        self.cfg = cfg or ImagePairConfig()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pair = image_pair(self.rng(index), self.cfg)
        out = {k: torch.as_tensor(v) for k, v in vars(pair).items() if k not in ("img1", "img2", "planes1", "planes2")}
        for k in ("img1", "img2"):
            out[k] = torch.from_numpy(getattr(pair, k)).permute(2, 0, 1).float() / 255
        for k in ("planes1", "planes2"):
            out[k] = torch.from_numpy(getattr(pair, k)).long()
        out["F"] = torch.as_tensor(pair.fundamental)
        return out


def preview(n: int, out: Path, seed: int = 0) -> Path:
    """PNG with one row per sample: cloud pair as given, after applying the true (R, t), then the two images."""

    if n < 1:
        raise LowlabelError(f"preview n={n}: need at least one sample")
    fig, _ = figure(0, figsize=(13, 3.2 * n))
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        cloud, pair = point_cloud_pair(rng), image_pair(rng)
        aligned = cloud.source @ cloud.R.T + cloud.t
        for col, (src, name) in enumerate([(cloud.source, "given"), (aligned, "source moved by true (R, t)")]):
            ax = fig.add_subplot(n, 4, 4 * i + col + 1, projection="3d")
            for pts, colour in ((src, "tab:blue"), (cloud.target, "tab:red")):
                ax.scatter(*pts[::3].T, s=0.5, c=colour)
            ax.set_title(f"pair {i}: {name}\noverlap {cloud.overlap:.2f}", fontsize=8)
            ax.set_axis_off()
        baseline = np.linalg.norm(pair.R.T @ pair.t)
        angle = np.degrees(np.arccos(np.clip((np.trace(pair.R) - 1) / 2, -1, 1)))
        for col, (img, name) in enumerate([(pair.img1, "view 1"), (pair.img2, "view 2")]):
            ax = fig.add_subplot(n, 4, 4 * i + col + 3)
            ax.imshow(img)
            ax.set_title(f"{name}: baseline {baseline:.2f} m, rotation {angle:.1f}°", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, out, dpi=80)
