"""The volumes world: 3D organ-like blobs with a bias field and noise, and exact label masks (serves DTC).

One volume holds one blob: an ellipsoid whose radius is modulated by a random polynomial of the direction
(degrees 1-3, the span of the real spherical harmonics up to degree 3), either hollow (a lumen) or with a
tubular appendage. Its implicit function `phi` is an approximate signed distance in voxels (negative inside);
the label is exactly `phi < 0`. Intensity = soft blob membership (+ smooth texture) times a multiplicative
bias field, plus Gaussian noise, z-scored over the volume. Axis order and dtypes follow the LA files read by
DTC: image float32 (H, W, D), label uint8 (H, W, D), D the slice axis. See docs/data/volumes.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from lowlabel.data.io import write_h5
from lowlabel.data.synth.base import SeededDataset
from lowlabel.errors import LowlabelError
from lowlabel.files import write_text
from lowlabel.report.figures import figure, save_figure

# Index pairs i <= j and triples i <= j <= k of the direction monomials u_i u_j and u_i u_j u_k: with the three
# u_i these are the 19 monomials of degree 1 to 3 (coefficients stored in that order: 3, 6, 10).
_PAIRS = [(i, j) for i in range(3) for j in range(i, 3)]
_TRIPLES = [(i, j, k) for i in range(3) for j in range(i, 3) for k in range(j, 3)]
N_COEFFS = 3 + len(_PAIRS) + len(_TRIPLES)


@dataclass(frozen=True)
class VolumeConfig:
    """Parameters of the volumes world (the comment on each field gives its unit)."""

    shape: tuple[int, int, int] = (64, 64, 48)
    semi_axes: tuple[float, float] = (0.2, 0.3)  # range of the ellipsoid's semi-axes, x the smallest axis
    deform: float = 0.4  # sum of |polynomial coefficients|: the radius stays within (1 +- deform) x ellipsoid
    lumen_prob: float = 0.5  # probability of a hollow blob; otherwise it gets an appendage
    lumen_frac: tuple[float, float] = (0.35, 0.55)  # lumen size relative to the blob
    min_wall_vox: float = 2.5  # thinnest wall, voxels: the lumen shrinks to allow it (below 0.2: no lumen)
    appendage_len: tuple[float, float] = (1.3, 1.7)  # tube length relative to the blob radius along it
    appendage_radius: tuple[float, float] = (0.3, 0.45)  # tube radius relative to the smallest semi-axis
    edge_vox: float = 0.6  # width of the soft intensity edge (partial volume), voxels
    contrast: float = 1.0  # blob minus background intensity before bias and noise
    texture: float = 0.15  # amplitude of a smooth additive texture
    bias: float = 0.3  # std of the log of the multiplicative bias field
    noise: float = 0.25  # std of the additive Gaussian noise (in units of `contrast`)
    margin_vox: float = 2.0  # minimum gap between the label and the volume border, voxels

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 16:
            raise LowlabelError(f"VolumeConfig.shape {self.shape}: need three axes of at least 16 voxels")
        if not 0 <= self.deform < 1:
            raise LowlabelError(f"VolumeConfig.deform={self.deform}: must be in [0, 1) so the radius stays positive")
        ranges = {"semi_axes": self.semi_axes, "lumen_frac": self.lumen_frac, "appendage_len": self.appendage_len,
                  "appendage_radius": self.appendage_radius}
        for name, (lo, hi) in ranges.items():
            if not 0 < lo <= hi:
                raise LowlabelError(f"VolumeConfig.{name}={(lo, hi)}: need 0 < low <= high")


@dataclass(frozen=True)
class Blob:
    """Parameters of one blob (voxel units): centre (3,), rotation (3, 3) local->volume, semi-axes (3,),
    direction-polynomial coefficients (19,), lumen fraction (0 = none), appendage tip (3,) and radius (0 = none)."""

    centre: np.ndarray
    rotation: np.ndarray
    axes: np.ndarray
    coeffs: np.ndarray
    lumen: float
    tip: np.ndarray
    tube_radius: float


def _radial(coeffs: np.ndarray, u: list[np.ndarray]) -> np.ndarray:
    """1 + sum_i a_i u_i + sum_{i<=j} b_ij u_i u_j + sum_{i<=j<=k} c_ijk u_i u_j u_k for unit directions given as
    three component arrays u (any common shape); coeffs (19,) = (a, b, c). Evaluated in nested (Horner) form."""
    a, b, c = coeffs[:3], coeffs[3:9], coeffs[9:]
    total = np.float32(1.0)
    for i in range(3):
        acc = np.float32(a[i])
        for j in range(i, 3):
            inner = np.float32(b[_PAIRS.index((i, j))])
            for k in range(j, 3):
                inner = inner + np.float32(c[_TRIPLES.index((i, j, k))]) * u[k]
            acc = acc + u[j] * inner
        total = total + u[i] * acc
    return total


def sample_blob(rng: np.random.Generator, cfg: VolumeConfig) -> Blob:
    """Draw one blob's parameters (the same number of draws from `rng` whatever the blob's kind).

    A blob too big for the volume is shrunk so the label stays `cfg.margin_vox` voxels from every face. A lumen is
    kept only if the wall can be `cfg.min_wall_vox` thick (the lumen is shrunk to allow it; below 0.2 the blob is
    plain); a blob that is not hollow gets the appendage.
    """
    rotation = Rotation.random(random_state=rng).as_matrix()  # uniform on SO(3)
    axes = rng.uniform(*cfg.semi_axes, size=3) * min(cfg.shape)
    coeffs = rng.standard_normal(N_COEFFS)
    coeffs *= cfg.deform / max(np.abs(coeffs).sum(), 1e-12)
    hollow = rng.random() < cfg.lumen_prob
    lumen = rng.uniform(*cfg.lumen_frac)
    d = rng.standard_normal(3)
    d /= np.linalg.norm(d)  # appendage direction in the local frame
    q = d / axes
    radius_along = _radial(coeffs, list(q / np.linalg.norm(q))) / np.linalg.norm(q)  # blob radius in direction d
    tip = rotation @ (d * radius_along * rng.uniform(*cfg.appendage_len))
    tube_radius = rng.uniform(*cfg.appendage_radius) * axes.min()
    # Half-extent per volume axis: the rotated ellipsoid grown by (1 + deform), and the tube (radius >= 1.5 voxels).
    extent = np.sqrt(((rotation * axes) ** 2).sum(axis=1)) * (1 + cfg.deform)
    if not hollow:
        extent = np.maximum(extent, np.abs(tip) + tube_radius)
    room = (np.array(cfg.shape) - 1) / 2 - cfg.margin_vox - 1 - (0 if hollow else 1.5)
    scale = min(1.0, float((room / extent).min()))
    axes, tip, tube_radius = axes * scale, tip * scale, max(1.5, tube_radius * scale)
    extent = extent * scale + (0 if hollow else 1.5)
    if hollow:
        lumen = min(lumen, 1 - cfg.min_wall_vox / ((1 - cfg.deform) * axes.min()))
        lumen = lumen if lumen >= 0.2 else 0.0
        tip, tube_radius = np.zeros(3), 0.0
    low = extent + cfg.margin_vox + 1
    centre = rng.uniform(low, np.maximum(np.array(cfg.shape) - 1 - low, low))
    return Blob(centre, rotation, axes, coeffs, lumen if hollow else 0.0, tip, tube_radius)


def blob_implicit(blob: Blob, shape: tuple[int, int, int]) -> np.ndarray:
    """Implicit function phi (H, W, D) float32 of `blob` on the voxel grid, about a signed distance in voxels.

    Body: with y = rotation^T (x - centre), q = y / axes, rho = |q| and u = q / rho, f = rho / radial(u) and
    phi_body = (f - 1) * mean(axes). Lumen: phi = max(phi_body, (lumen - f) * mean(axes)). Appendage:
    phi = min(phi_body, distance to the segment centre->centre+tip minus tube_radius). Label = phi < 0.
    """
    g = [np.arange(n, dtype=np.float32).reshape([-1 if j == i else 1 for j in range(3)]) - np.float32(c)
         for i, (n, c) in enumerate(zip(shape, blob.centre, strict=True))]  # sparse offsets from the centre
    rot = (blob.rotation / blob.axes).astype(np.float32)  # column k scaled by 1 / axes[k]
    q = [g[0] * rot[0, k] + g[1] * rot[1, k] + g[2] * rot[2, k] for k in range(3)]
    rho = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
    inv = 1 / np.maximum(rho, np.float32(1e-6))
    f = rho / _radial(blob.coeffs, [qk * inv for qk in q])
    scale = np.float32(blob.axes.mean())
    phi = (f - 1) * scale
    if blob.lumen:
        phi = np.maximum(phi, (np.float32(blob.lumen) - f) * scale)
    if blob.tube_radius:
        tip = blob.tip.astype(np.float32)
        s = np.clip((g[0] * tip[0] + g[1] * tip[1] + g[2] * tip[2]) / (tip @ tip), 0, 1)
        dist = np.sqrt((g[0] - s * tip[0]) ** 2 + (g[1] - s * tip[1]) ** 2 + (g[2] - s * tip[2]) ** 2)
        phi = np.minimum(phi, dist - np.float32(blob.tube_radius))
    return phi.astype(np.float32)


def _linear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix of 1D linear interpolation with aligned end points (zoom's grid_mode=False)."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] = 1 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], grid: int) -> np.ndarray:
    """A smooth random field (H, W, D) float32: N(0, 1) values on a coarse grid (about `grid` nodes along the
    longest axis, at least 2 per axis), trilinearly upsampled with end points aligned. Equals
    scipy.ndimage.zoom(coarse, order=1, grid_mode=False) but computed as three matrix products, the largest last
    so that it writes the C-ordered result directly."""
    coarse_shape = tuple(max(2, round(n * grid / max(shape))) for n in shape)
    field = rng.standard_normal(coarse_shape).astype(np.float32)
    mx, my, mz = (_linear_matrix(n_out, n_in) for n_out, n_in in zip(shape, coarse_shape, strict=True))
    field = my @ (field @ mz.T)  # (cx, H2, H3)
    return (mx @ field.reshape(coarse_shape[0], -1)).reshape(shape)


def generate_volume(rng: np.random.Generator, cfg: VolumeConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One volume: image float32 (H, W, D) z-scored, label uint8 (H, W, D) in {0, 1} (= blob_implicit < 0).

    Draw order from `rng`: blob, texture, bias, noise. Before z-scoring,
    image = (contrast * sigmoid(-phi / edge_vox) + texture * T) * exp(bias * B) + noise * N.
    """
    cfg = cfg or VolumeConfig()
    blob = sample_blob(rng, cfg)
    phi = blob_implicit(blob, cfg.shape)
    label = (phi < 0).astype(np.uint8)
    soft = 1 / (1 + np.exp(np.clip(phi / np.float32(cfg.edge_vox), -30, 30)))
    texture = smooth_field(rng, cfg.shape, 8)
    bias = np.exp(np.float32(cfg.bias) * smooth_field(rng, cfg.shape, 3))
    image = (np.float32(cfg.contrast) * soft + np.float32(cfg.texture) * texture) * bias
    image += np.float32(cfg.noise * cfg.contrast) * rng.standard_normal(cfg.shape, dtype=np.float32)
    image -= image.mean()
    image /= max(float(image.std()), 1e-6)
    return image.astype(np.float32), label


class VolumesDataset(SeededDataset):
    """Torch view of the volumes world: item i = {'image': float32 (1, H, W, D), 'label': int64 (H, W, D)},
    generated from np.random.default_rng([seed, i]) (the same in any process or DataLoader worker)."""

    def __init__(self, n: int, seed: int = 0, cfg: VolumeConfig | None = None) -> None:
        if n < 1:
            raise LowlabelError(f"VolumesDataset n={n}: need at least one volume")
        super().__init__(n, seed)
        self.cfg = cfg or VolumeConfig()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, label = generate_volume(self.rng(index), self.cfg)
        return {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label).long()}


def write_la_layout(root: str | Path, n_train: int, n_test: int, seed: int = 0,
                    cfg: VolumeConfig | None = None) -> Path:
    """Write volumes in the LA layout DTC reads: <root>/<case>/mri_norm2.h5 (gzip `image`, `label`) plus
    train.list and test.list (one case id per line). Case k (k < n_train: train) is volume k of
    VolumesDataset(n_train + n_test, seed, cfg), named f"SYNTH{seed:05d}{k:010d}" (20 characters like the LA ids
    for seed < 100000)."""
    if n_train < 0 or n_test < 0 or n_train + n_test < 1:
        raise LowlabelError(f"write_la_layout: n_train={n_train}, n_test={n_test}; need counts >= 0, not both 0")
    root = Path(root)
    cfg = cfg or VolumeConfig()
    names = [f"SYNTH{seed:05d}{k:010d}" for k in range(n_train + n_test)]
    for k, name in enumerate(names):
        image, label = generate_volume(np.random.default_rng([seed, k]), cfg)
        write_h5(root / name / "mri_norm2.h5", image=image, label=label)
    write_text(root / "train.list", "".join(f"{n}\n" for n in names[:n_train]))
    write_text(root / "test.list", "".join(f"{n}\n" for n in names[n_train:]))
    return root


def preview(n: int, out: Path, seed: int = 0) -> Path:
    """PNG of `n` volumes: axial (middle slice through the blob), coronal and sagittal slices, label outlined."""
    from scipy import ndimage

    if n < 1:
        raise LowlabelError(f"preview n={n}: need at least one volume")
    fig, axes = figure(n, 3, figsize=(9, 3.2 * n), squeeze=False)
    for i in range(n):
        image, label = generate_volume(np.random.default_rng([seed, i]))
        cx, cy, cz = (round(c) for c in ndimage.center_of_mass(label))
        views = [("axial z", cz, image[:, :, cz], label[:, :, cz]),
                 ("coronal y", cy, image[:, cy, :], label[:, cy, :]),
                 ("sagittal x", cx, image[cx], label[cx])]
        for ax, (name, k, img, lab) in zip(axes[i], views, strict=True):
            ax.imshow(img.T, cmap="gray", origin="lower")
            ax.contour(lab.T, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"vol {i}: {name}={k}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, out, dpi=80)
