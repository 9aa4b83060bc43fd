"""The geometry world: clouds align under the true transform, image pairs agree with their pose and depth."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from lowlabel.data.synth import geometry as G
from lowlabel.errors import LowlabelError


def _is_rotation(R: np.ndarray) -> bool:
    return bool(np.allclose(R @ R.T, np.eye(3), atol=1e-10) and abs(np.linalg.det(R) - 1) < 1e-10)


@pytest.mark.parametrize("index", range(4))
def test_cloud_pair_aligns_with_true_transform(index: int) -> None:
    cfg = G.CloudConfig()
    pair = G.point_cloud_pair(np.random.default_rng([1, index]), cfg)
    assert _is_rotation(pair.R)
    assert pair.source.dtype == pair.target.dtype == np.float32
    moved = pair.source.astype(float) @ pair.R.T + pair.t
    i, j = pair.correspondences.T
    dist = np.linalg.norm(moved[i] - pair.target[j], axis=1)
    # Difference of two independent N(0, s^2 I) points: chi distribution with 3 dof and scale s*sqrt(2),
    # mean s * sqrt(2) * 2 * sqrt(2 / pi) = 4 s / sqrt(pi).
    assert dist.mean() == pytest.approx(4 * cfg.noise / math.sqrt(math.pi), rel=0.1)
    assert len(np.unique(i)) == len(i) and len(np.unique(j)) == len(j)
    # Overlap as measured with a k-d tree (no index bookkeeping) matches the stated ratio.
    nearest, _ = cKDTree(pair.target).query(moved)
    measured = float((nearest < 5 * cfg.noise).mean())
    assert pair.overlap == len(i) / len(pair.source)
    assert abs(measured - pair.overlap) < 0.03
    assert cfg.overlap[0] - 0.01 <= pair.overlap <= cfg.overlap[1] + 0.01
    # Without the transform the clouds do not line up.
    unmoved, _ = cKDTree(pair.target).query(pair.source)
    assert float((unmoved < 5 * cfg.noise).mean()) < 0.5 * pair.overlap


def test_noise_free_pair_is_exact_and_labels_agree() -> None:
    pair = G.point_cloud_pair(np.random.default_rng(3), G.CloudConfig(noise=0.0, max_angle=30.0))
    i, j = pair.correspondences.T
    np.testing.assert_allclose(pair.source[i] @ pair.R.T + pair.t, pair.target[j], atol=2e-5)
    np.testing.assert_array_equal(pair.labels_source[i], pair.labels_target[j])
    angle = math.degrees(math.acos((np.trace(pair.R) - 1) / 2))
    assert angle <= 30.0 + 1e-6
    assert set(np.unique(pair.labels_source)) >= {0, 1, 2}


def test_scene_points_lie_on_their_primitives() -> None:
    points, labels = G.sample_scene(np.random.default_rng(4), G.CloudConfig())
    assert points.shape == (4096, 3) and labels.shape == (4096,)
    floor, wall = points[labels == 0], points[labels == 1]
    np.testing.assert_allclose(floor[:, 2], 0.0)
    np.testing.assert_allclose(wall[:, 0], -1.0)
    assert (points[:, 2] >= -1e-9).all()  # everything rests on or above the floor
    # Points per primitive are proportional to its area: floor (4) vs wall (2) about 2:1.
    assert 1.6 < len(floor) / len(wall) < 2.5


def test_bounded_random_rotation() -> None:
    rng = np.random.default_rng(0)
    angles = []
    for _ in range(200):
        R = G._random_rotation(rng, 30.0)
        assert _is_rotation(R)
        angles.append(math.degrees(math.acos(np.clip((np.trace(R) - 1) / 2, -1, 1))))
    assert max(angles) <= 30.0 + 1e-9 and min(angles) < 3 and max(angles) > 27
    np.testing.assert_allclose(G._axis_angle(np.array([0.0, 0.0, 2.0]), math.pi / 2) @ [1.0, 0, 0], [0, 1.0, 0],
                               atol=1e-12)


@pytest.fixture(scope="module")
def pairs() -> list[G.ImagePair]:
    return [G.image_pair(np.random.default_rng([2, i])) for i in range(3)]


def _correspondences(pair: G.ImagePair, R: np.ndarray, t: np.ndarray):
    """Pixels of view 1 with their projection x2 into view 2 (via depth1 and (R, t)) where view 2 sees the same
    plane at the same depth over the whole bilinear footprint; returns (x1 (N, 3), x2 (N, 3), colours1, colours2)."""
    h, w = pair.depth1.shape
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    x1 = np.stack([cols.ravel(), rows.ravel(), np.ones(h * w)]).astype(float)
    X1 = np.linalg.inv(pair.K) @ x1 * pair.depth1.ravel()
    X2 = R @ X1 + t[:, None]
    x2 = pair.K @ X2 / X2[2]
    c0, r0 = np.floor(x2[0]).astype(int), np.floor(x2[1]).astype(int)
    ok = (X2[2] > 0) & (c0 >= 0) & (r0 >= 0) & (c0 < w - 1) & (r0 < h - 1)
    plane1 = pair.planes1.ravel()
    for dr in (0, 1):
        for dc in (0, 1):
            rr, cc = np.clip(r0 + dr, 0, h - 1), np.clip(c0 + dc, 0, w - 1)
            ok &= pair.planes2[rr, cc] == plane1
    rr, cc = np.clip(np.rint(x2[1]).astype(int), 0, h - 1), np.clip(np.rint(x2[0]).astype(int), 0, w - 1)
    ok &= np.abs(pair.depth2[rr, cc] - X2[2]) < 0.05 * X2[2]  # not occluded (same plane: loose is enough)
    fc, fr = x2[0, ok] - c0[ok], x2[1, ok] - r0[ok]
    img2 = pair.img2.astype(float)
    r, c = r0[ok], c0[ok]
    bilinear = ((1 - fr) * (1 - fc))[:, None] * img2[r, c] + ((1 - fr) * fc)[:, None] * img2[r, c + 1] \
        + (fr * (1 - fc))[:, None] * img2[r + 1, c] + (fr * fc)[:, None] * img2[r + 1, c + 1]
    return x1[:, ok].T, x2[:, ok].T, pair.img1.reshape(-1, 3)[ok].astype(float), bilinear


def test_image_pair_fields(pairs: list[G.ImagePair]) -> None:
    pair = pairs[0]
    assert pair.img1.shape == pair.img2.shape == (96, 128, 3) and pair.img1.dtype == np.uint8
    assert pair.depth1.dtype == np.float32 and np.isfinite(pair.depth1).all() and (pair.depth1 > 0).all()
    assert _is_rotation(pair.R)
    assert pair.K[0, 0] == pair.K[1, 1] > 0 and pair.K[0, 2] == 63.5 and pair.K[1, 2] == 47.5
    # Each pixel's 3D point lies on the plane it is labelled with.
    h, w = pair.depth1.shape
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    X1 = np.linalg.inv(pair.K) @ np.stack([cols.ravel(), rows.ravel(), np.ones(h * w)]) * pair.depth1.ravel()
    p = pair.planes1.ravel()
    residual = (pair.normals[p] * X1.T).sum(axis=1) - pair.offsets[p]
    assert np.abs(residual).max() < 1e-4 * pair.depth1.max()
    assert len(np.unique(pair.planes1)) >= 5


def test_view2_has_the_colour_of_the_projected_point(pairs: list[G.ImagePair]) -> None:
    for pair in pairs:
        x1, _, col1, col2 = _correspondences(pair, pair.R, pair.t)
        assert len(x1) > 0.5 * pair.depth1.size
        err = np.abs(col1 - col2).max(axis=1)
        assert np.median(err) <= 3 and np.quantile(err, 0.95) <= 12
        # A wrong pose (camera 2 moved 10 cm more) breaks the agreement: the check has teeth.
        _, _, wrong1, wrong2 = _correspondences(pair, pair.R, pair.t + np.array([0.1, 0, 0]))
        assert np.median(np.abs(wrong1 - wrong2).max(axis=1)) > 3 * max(np.median(err), 1)


def test_epipolar_constraint_and_view2_depth(pairs: list[G.ImagePair]) -> None:
    for pair in pairs:
        x1, x2, _, _ = _correspondences(pair, pair.R, pair.t)
        lines = x1 @ pair.fundamental.T  # epipolar lines F x1 in view 2
        dist = np.abs((x2 * lines).sum(axis=1)) / np.linalg.norm(lines[:, :2], axis=1)
        assert dist.max() < 1e-3  # pixels
        # The same constraint from view 2's own depth, mapped back with the inverse pose.
        h, w = pair.depth2.shape
        cols, rows = np.meshgrid(np.arange(w), np.arange(h))
        y2 = np.stack([cols.ravel(), rows.ravel(), np.ones(h * w)])
        X1 = pair.R.T @ (np.linalg.inv(pair.K) @ y2 * pair.depth2.ravel() - pair.t[:, None])
        y1 = pair.K @ X1 / X1[2]
        lines2 = pair.fundamental @ y1
        assert (np.abs((y2 * lines2).sum(axis=0)) / np.linalg.norm(lines2[:2], axis=0)).max() < 1e-3
    E = pairs[0].essential
    assert np.linalg.svd(E, compute_uv=False)[2] < 1e-9 * np.linalg.norm(E)


def test_datasets_loader_workers_and_determinism() -> None:
    clouds = G.PointCloudPairs(3, seed=5)
    images = G.ImagePairs(3, seed=5)
    direct = [clouds[i] for i in range(3)], [images[i] for i in range(3)]
    pair = G.point_cloud_pair(np.random.default_rng([5, 1]))
    assert direct[0][1]["source"].numpy().tobytes() == pair.source.tobytes()
    assert direct[1][0]["img1"].shape == (3, 96, 128) and direct[1][0]["img1"].max() <= 1
    for ds, items in zip((clouds, images), direct, strict=True):
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        for got, want in zip(loader, items, strict=True):
            assert got.keys() == want.keys()
            assert all(torch.equal(got[k], want[k]) for k in want)
    other = G.image_pair(np.random.default_rng([6, 0]))
    assert other.img1.tobytes() != G.image_pair(np.random.default_rng([5, 0])).img1.tobytes()
    with pytest.raises(IndexError):
        images[3]


def test_same_bytes_in_a_fresh_interpreter() -> None:
    code = (
        "import hashlib, numpy as np; from lowlabel.data.synth import geometry as G; "
        "c = G.point_cloud_pair(np.random.default_rng(1)); p = G.image_pair(np.random.default_rng(1)); "
        "print(hashlib.sha256(c.source.tobytes() + c.target.tobytes() + p.img2.tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "11", "PYTHONPATH": str(Path(G.__file__).parents[3])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    c, p = G.point_cloud_pair(np.random.default_rng(1)), G.image_pair(np.random.default_rng(1))
    assert out.stdout.strip() == hashlib.sha256(c.source.tobytes() + c.target.tobytes() + p.img2.tobytes()).hexdigest()


def test_config_errors_and_preview(tmp_path: Path) -> None:
    with pytest.raises(LowlabelError, match="overlap"):
        G.CloudConfig(overlap=(0.0, 0.5))
    with pytest.raises(LowlabelError, match="height"):
        G.ImagePairConfig(height=4)
    out = G.preview(n=1, out=tmp_path / "g.png", seed=0)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
