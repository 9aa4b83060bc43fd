"""SGP's robust-fitting teachers and verifiers (spec "Teacher, pseudo-labels and verifier", 2D and 3D).

3D: voxel downsampling, normals, FPFH, correspondence RANSAC + ICP, written on numpy/scipy (Open3D's algorithms,
re-implemented because the Open3D wheel needs system libraries that are often missing, e.g. libusb). 2D: SIFT
keypoints and descriptors (OpenCV), matching and the essential-matrix teacher of `geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.methods.sgp.geometry import (
    apply_transform,
    essential_teacher,
    match_descriptors,
    match_features,
    weighted_procrustes,
)

VOXEL = 0.05  # official voxel size (m)
MIN_CORRESPONDENCES = 10  # fewer 3D correspondences give T = I and confidence 0
MIN_MATCHES_2D, MIN_INLIER_RATIO_2D = 100, 0.3  # config_sgp.yml (the parser default ratio is 0.001)
MIN_CONFIDENCE_3D = 0.3  # overlap_thr


def _points(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or len(x) == 0 or not np.isfinite(x).all():
        raise LowlabelError(f"{name}: need a non-empty finite (N, 3) point array, got shape {x.shape}")
    return x


# ------------------------------------------------------------------------------------------------ 3D features


def voxel_downsample(points: np.ndarray, voxel_size: float = VOXEL) -> np.ndarray:
    """Mean of the points in each occupied voxel (M, 3) (Open3D `voxel_down_sample`, used by the teacher): voxel
    index floor((p - (min - v/2)) / v), voxels in lexicographic order of their index."""
    p = _points(points, "voxel_downsample points")
    key = np.floor((p - (p.min(0) - voxel_size / 2)) / voxel_size).astype(np.int64)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse.ravel(), p)
    return sums / counts[:, None]


def voxel_select(points: np.ndarray, voxel_size: float = VOXEL) -> np.ndarray:
    """Indices (M,) of one point per occupied voxel floor(p / v), the first in input order (MinkowskiEngine
    `sparse_quantize(return_index=True)`, used for the student's input), sorted."""
    p = _points(points, "voxel_select points")
    _, first = np.unique(np.floor(p / voxel_size).astype(np.int64), axis=0, return_index=True)
    return np.sort(first)


def _hybrid_neighbours(points: np.ndarray, radius: float, max_nn: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to max_nn nearest neighbours within radius (Open3D's hybrid search, the point itself first):
    indices (N, max_nn) with N for a missing slot, squared distances (N, max_nn) with inf."""
    dist, idx = cKDTree(points).query(points, k=min(max_nn, len(points)), distance_upper_bound=radius, workers=-1)
    dist, idx = dist.reshape(len(points), -1), idx.reshape(len(points), -1)
    return idx, dist**2


def estimate_normals(points: np.ndarray, radius: float = 2 * VOXEL, max_nn: int = 30,
                     viewpoint: np.ndarray | None = None) -> np.ndarray:
    """Unit normals (N, 3): the least-variance axis of each hybrid neighbourhood (Open3D `estimate_normals`).

    Open3D leaves the sign to its eigen-solver; here every normal points towards `viewpoint` (3,), by default the
    origin (PCL's default viewpoint: the sensor, for fragments stored in sensor coordinates as 3DMatch's), so that the
    same surface gets the same sign in two views. On the four real 3DMatch pairs this registers all four with FPFH,
    against two of four when normals point at the centroid. A point with fewer than 3 neighbours gets (0, 0, 1).
    """
    p = _points(points, "estimate_normals points")
    idx, _ = _hybrid_neighbours(p, radius, max_nn)
    valid = idx < len(p)
    padded = np.concatenate([p, np.zeros((1, 3))])
    nb = padded[idx]  # (N, k, 3)
    cnt = valid.sum(1, keepdims=True)
    mean = nb.sum(1) / cnt
    centred = (nb - mean[:, None]) * valid[..., None]
    cov = np.einsum("nki,nkj->nij", centred, centred) / cnt[..., None]
    normals = np.linalg.eigh(cov)[1][:, :, 0]
    normals[cnt[:, 0] < 3] = (0.0, 0.0, 1.0)
    view = np.zeros(3) if viewpoint is None else np.asarray(viewpoint, dtype=np.float64)
    flip = ((view - p) * normals).sum(1) < 0
    normals[flip] *= -1
    return normals


def _pair_features(p1: np.ndarray, n1: np.ndarray, p2: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Open3D's point-pair features (K, 3): (theta, alpha, phi) of the Darboux frame at the point whose normal is
    closer to the connecting line; zero for coincident points or a degenerate frame."""
    d = p2 - p1
    norm = np.linalg.norm(d, axis=1)
    safe = np.where(norm > 0, norm, 1.0)
    a1, a2 = (n1 * d).sum(1) / safe, (n2 * d).sum(1) / safe
    swap = np.arccos(np.clip(np.abs(a1), 0, 1)) > np.arccos(np.clip(np.abs(a2), 0, 1))
    u = np.where(swap[:, None], n2, n1)
    other = np.where(swap[:, None], n1, n2)
    d = np.where(swap[:, None], -d, d)
    phi = np.where(swap, -a2, a1)
    v = np.cross(d, u)
    v_norm = np.linalg.norm(v, axis=1)
    v = v / np.where(v_norm > 0, v_norm, 1.0)[:, None]
    w = np.cross(u, v)
    alpha = (v * other).sum(1)
    theta = np.arctan2((w * other).sum(1), (u * other).sum(1))
    out = np.stack([theta, alpha, phi], axis=1)
    out[(norm == 0) | (v_norm == 0)] = 0.0
    return out


def fpfh(points: np.ndarray, normals: np.ndarray, radius: float = 5 * VOXEL, max_nn: int = 100) -> np.ndarray:
    """Fast point feature histograms (N, 33) as Open3D `compute_fpfh_feature`.

    SPFH: 11-bin histograms of theta in [-pi, pi], alpha and phi in [-1, 1] over the hybrid neighbours (the point
    itself excluded), each pair adding 100 / (neighbours); FPFH: the SPFH of the point plus the neighbours' SPFH
    weighted by 1 / squared distance, each 11-bin block of the weighted sum rescaled to total 100.
    """
    p = _points(points, "fpfh points")
    n = np.asarray(normals, dtype=np.float64)
    idx, d2 = _hybrid_neighbours(p, radius, max_nn)
    rows = np.repeat(np.arange(len(p)), idx.shape[1]).reshape(idx.shape)
    pair = (idx < len(p)) & (idx != rows)
    i, j = rows[pair], idx[pair]
    feats = _pair_features(p[i], n[i], p[j], n[j])
    bins = np.stack([np.floor(11 * (feats[:, 0] + np.pi) / (2 * np.pi)),
                     np.floor(11 * (feats[:, 1] + 1) / 2), np.floor(11 * (feats[:, 2] + 1) / 2)], 1)
    bins = np.clip(bins, 0, 10).astype(np.int64) + np.array([0, 11, 22])
    per_point = np.bincount(i, minlength=len(p)).astype(np.float64)
    incr = 100.0 / np.maximum(per_point[i], 1)
    spfh = np.zeros((len(p), 33))
    for c in range(3):
        np.add.at(spfh, (i, bins[:, c]), incr)
    keep = d2[pair] > 0
    weighted = np.zeros((len(p), 33))
    np.add.at(weighted, i[keep], spfh[j[keep]] / d2[pair][keep][:, None])
    sums = weighted.reshape(-1, 3, 11).sum(2, keepdims=True)
    scale = np.where(sums > 0, 100.0 / np.where(sums > 0, sums, 1.0), 0.0)
    out = (weighted.reshape(-1, 3, 11) * scale).reshape(-1, 33) + spfh
    out[per_point == 0] = 0.0
    return out


def fpfh_features(points: np.ndarray, voxel_size: float = VOXEL, viewpoint: np.ndarray | None = None) -> np.ndarray:
    """The official FPFH settings: normals from radius 2 v (30 neighbours), features from radius 5 v (100)."""
    return fpfh(points, estimate_normals(points, 2 * voxel_size, 30, viewpoint), 5 * voxel_size, 100)


# ----------------------------------------------------------------------------------------------- 3D fitting


def ransac_registration(src: np.ndarray, dst: np.ndarray, corr: np.ndarray, distance: float = 1.4 * VOXEL,
                        max_iter: int = 10_000, confidence: float = 0.9999, rng: np.random.Generator | None = None,
                        chunk: int = 500) -> tuple[np.ndarray, float]:
    """Correspondence RANSAC (Open3D `registration_ransac_based_on_correspondence`, point-to-point, 3 per sample).

    src (N, 3), dst (M, 3), corr (K, 2) int rows (i, j). Each hypothesis is a Procrustes fit to 3 distinct
    correspondences; its fitness is the share of correspondences with ||T src_i - dst_j|| < distance (ties broken
    by the smaller inlier RMSE). Stops after max_iter hypotheses or once log(1 - confidence) / log(1 - fitness^3)
    are drawn. Hypotheses are evaluated `chunk` at a time (vectorised), so the stop is checked per chunk.
    Returns the best (4, 4) transform and its fitness (0 with T = I when there are fewer than 3 correspondences).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    a, b = src[corr[:, 0]], dst[corr[:, 1]]
    best_T, best_fit, best_rmse = np.eye(4), 0.0, np.inf
    if len(corr) < 3:
        return best_T, best_fit
    needed, drawn = max_iter, 0
    while drawn < min(max_iter, needed):
        n = min(chunk, max_iter - drawn)
        sample = rng.integers(0, len(corr), size=(n, 3))
        distinct = (sample[:, 0] != sample[:, 1]) & (sample[:, 0] != sample[:, 2]) & (sample[:, 1] != sample[:, 2])
        drawn += n
        sample = sample[distinct]
        if len(sample) == 0:
            continue
        R, t = weighted_procrustes(a[sample], b[sample])  # (n, 3, 3), (n, 3)
        resid = np.linalg.norm(np.einsum("nij,kj->nki", R, a) + t[:, None] - b[None], axis=2)  # (n, K)
        inlier = resid < distance
        fit = inlier.mean(1)
        rmse = np.sqrt((resid**2 * inlier).sum(1) / np.maximum(inlier.sum(1), 1))
        k = int(np.lexsort((rmse, -fit))[0])
        if fit[k] > best_fit or (fit[k] == best_fit and fit[k] > 0 and rmse[k] < best_rmse):
            best_fit, best_rmse = float(fit[k]), float(rmse[k])
            best_T = np.eye(4)
            best_T[:3, :3], best_T[:3, 3] = R[k], t[k]
            if best_fit >= 1.0:
                break
            needed = int(np.ceil(np.log(1 - confidence) / np.log(1 - best_fit**3))) if best_fit > 0 else max_iter
    return best_T, best_fit


def icp(src: np.ndarray, dst: np.ndarray, T_init: np.ndarray, distance: float = 1.4 * VOXEL,
        max_iter: int = 30) -> tuple[np.ndarray, float]:
    """Point-to-point ICP (Open3D `registration_icp` defaults: 30 iterations, relative fitness/RMSE change 1e-6).

    Returns the refined (4, 4) transform and its fitness: the share of source points with a target point within
    `distance` after the final transform."""
    tree = cKDTree(dst)
    T = np.asarray(T_init, dtype=np.float64).copy()
    prev = (-1.0, -1.0)
    for _ in range(max_iter):
        d, j = tree.query(apply_transform(src, T), k=1, distance_upper_bound=distance, workers=-1)
        ok = np.isfinite(d)
        if ok.sum() < 3:
            break
        fit, rmse = ok.mean(), float(np.sqrt((d[ok] ** 2).mean()))
        if abs(fit - prev[0]) < 1e-6 and abs(rmse - prev[1]) < 1e-6:
            break
        prev = (fit, rmse)
        R, t = weighted_procrustes(apply_transform(src[ok], T), dst[j[ok]])
        step = np.eye(4)
        step[:3, :3], step[:3, 3] = R, t
        T = step @ T
    d, _ = tree.query(apply_transform(src, T), k=1, distance_upper_bound=distance, workers=-1)
    return T, float(np.isfinite(d).mean())


@dataclass
class Registration:
    """A 3D pseudo-label: T (4, 4) source -> target, confidence = ICP fitness * min(1, |dst| / |src|), and the
    number of feature correspondences it came from."""

    T: np.ndarray
    confidence: float
    num_correspondences: int


def register(src: np.ndarray, dst: np.ndarray, f_src: np.ndarray, f_dst: np.ndarray, *, mutual: bool,
             distance: float = 1.4 * VOXEL, max_iter: int = 10_000, confidence: float = 0.9999,
             rng: np.random.Generator | None = None) -> Registration:
    """The official 3D teacher on prepared clouds (`perception3d.adaptor.register` after feature extraction).

    src (N, 3), dst (M, 3) downsampled points with features f_src (N, D), f_dst (M, D): match (mutual for FPFH,
    plain for learned features), fewer than 10 matches -> T = I and confidence 0; RANSAC; if its fitness > 1e-6, ICP
    at the same distance; confidence = ICP fitness * min(1, M / N).
    """
    src, dst = _points(src, "register src"), _points(dst, "register dst")
    corr = match_features(f_src, f_dst, mutual=mutual)
    if len(corr) < MIN_CORRESPONDENCES:
        return Registration(np.eye(4), 0.0, len(corr))
    T, fit = ransac_registration(src, dst, corr, distance, max_iter, confidence, rng)
    if fit <= 1e-6:
        return Registration(T, float(fit), len(corr))
    T, fit = icp(src, dst, T, distance)
    return Registration(T, fit * min(1.0, len(dst) / len(src)), len(corr))


def register_fpfh(src: np.ndarray, dst: np.ndarray, voxel_size: float = VOXEL, *, orient: str = "origin",
                  rng: np.random.Generator | None = None, max_iter: int = 10_000) -> Registration:
    """The bootstrap 3D teacher on raw clouds: mean voxel downsampling, FPFH, mutual matching, RANSAC + ICP at
    1.4 voxel. The transform applies to the raw clouds (downsampling does not move the frame). `orient`: normals
    point at the origin (each cloud in its sensor's coordinates, as 3DMatch fragments) or at each cloud's centroid
    (clouds in arbitrary poses, e.g. the geometry world)."""
    if orient not in ("origin", "centroid"):
        raise LowlabelError(f"register_fpfh orient='{orient}': use 'origin' (sensor coordinates) or 'centroid'")
    a, b = voxel_downsample(src, voxel_size), voxel_downsample(dst, voxel_size)
    view_a, view_b = (None, None) if orient == "origin" else (a.mean(0), b.mean(0))
    return register(a, b, fpfh_features(a, voxel_size, view_a), fpfh_features(b, voxel_size, view_b), mutual=True,
                    distance=1.4 * voxel_size, max_iter=max_iter, rng=rng)


# ------------------------------------------------------------------------------------------------- verifiers


def verify_2d(num_inliers: np.ndarray | float, num_matches: np.ndarray | float, min_matches: int = MIN_MATCHES_2D,
              min_inlier_ratio: float = MIN_INLIER_RATIO_2D) -> np.ndarray | bool:
    """Keep a 2D pseudo-label iff num_matches >= 100 and num_inliers / num_matches >= 0.3 (both inclusive, as the
    official reader). Scalars or arrays (B,) -> bool or (B,) bool; zero matches are rejected."""
    inl, mat = np.asarray(num_inliers, dtype=np.float64), np.asarray(num_matches, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (mat >= min_matches) & (mat > 0) & (inl / np.where(mat > 0, mat, 1) >= min_inlier_ratio)
    return bool(ok) if ok.ndim == 0 else ok


def verify_3d(confidence: np.ndarray | float, threshold: float = MIN_CONFIDENCE_3D) -> np.ndarray | bool:
    """Keep a 3D pseudo-label iff its confidence >= 0.3 (inclusive, official `overlap_thr`)."""
    ok = np.asarray(confidence, dtype=np.float64) >= threshold
    return bool(ok) if ok.ndim == 0 else ok


# ----------------------------------------------------------------------------------------------- 2D teacher


def sift(image: np.ndarray, num_kpts: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """SIFT keypoints (N, 2) (x, y pixels) and descriptors (N, 128) float32 on the grey image (`cv2.SIFT_create`,
    up to `num_kpts`). image: (H, W, 3) RGB uint8 or (H, W) grey."""
    cv2 = require("cv2", "geometry", "SIFT keypoints")

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise LowlabelError(f"sift needs a uint8 (H, W) or (H, W, 3) image, got {img.dtype} {img.shape}")
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    kps, desc = cv2.SIFT_create(nfeatures=num_kpts).detectAndCompute(grey, None)
    if desc is None:
        return np.zeros((0, 2)), np.zeros((0, 128), np.float32)
    return np.array([k.pt for k in kps], dtype=np.float64), desc


@dataclass
class TwoViewLabel:
    """A 2D pseudo-label: F (3, 3) with F[2, 2] = 1, R (3, 3), t (3,), num_inliers, num_matches."""

    F: np.ndarray
    R: np.ndarray
    t: np.ndarray
    num_inliers: int
    num_matches: int


def two_view_teacher(kp1: np.ndarray, kp2: np.ndarray, d1: np.ndarray, d2: np.ndarray, K1: np.ndarray,
                     K2: np.ndarray, *, ratio: float = 0.75, cross_check: bool = False,
                     threshold: float = 1e-3) -> TwoViewLabel:
    """The official 2D teacher (`perception2d.adaptor.align`) on keypoints kp (N, 2) with descriptors d (N, D):
    fewer than 5 keypoints in a view or 5 or fewer matches give F = R = I, t = 0 and no inliers; otherwise match
    (ratio test for the SIFT bootstrap, `cross_check` for learned descriptors) and run `essential_teacher`."""
    if len(kp1) < 5 or len(kp2) < 5:
        return TwoViewLabel(np.eye(3), np.eye(3), np.zeros(3), 0, 0)
    m = match_descriptors(d1, d2, ratio=ratio, cross_check=cross_check)
    R, t, inliers, F = essential_teacher(kp1[m[:, 0]], kp2[m[:, 1]], K1, K2, threshold=threshold)
    return TwoViewLabel(F, R, t, int(inliers.sum()), len(m))
