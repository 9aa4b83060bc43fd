"""SGP teachers and verifiers: voxelisation and FPFH against per-point loops, RANSAC/ICP on known poses, the verifier
boundaries, the 3D teacher on a geometry-world pair and the 2D teacher on a rendered image pair."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lowlabel.data.synth.geometry import CloudConfig, ImagePairConfig, image_pair, point_cloud_pair, sample_scene
from lowlabel.errors import LowlabelError
from lowlabel.methods.sgp.geometry import angular_translation_error, make_transform, rotation_error, translation_error
from lowlabel.methods.sgp.teacher import (
    estimate_normals,
    fpfh,
    icp,
    ransac_registration,
    register_fpfh,
    sift,
    two_view_teacher,
    verify_2d,
    verify_3d,
    voxel_downsample,
    voxel_select,
)


def scene(seed: int, n: int = 1500) -> np.ndarray:
    return sample_scene(np.random.default_rng(seed), CloudConfig(n_points=n))[0]


def test_voxel_downsample_is_the_mean_per_voxel() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.3, size=(400, 3))
    v = 0.1
    origin = p.min(0) - v / 2
    cells: dict[tuple, list] = {}
    for q in p:
        cells.setdefault(tuple(np.floor((q - origin) / v).astype(int)), []).append(q)
    expected = np.array([np.mean(cells[k], axis=0) for k in sorted(cells)])
    np.testing.assert_allclose(voxel_downsample(p, v), expected, atol=1e-12)
    sel = voxel_select(p, v)
    keys = [tuple(np.floor(q / v).astype(int)) for q in p]
    firsts = sorted({k: i for i, k in reversed(list(enumerate(keys)))}.values())
    np.testing.assert_array_equal(sel, firsts)


def test_normals_of_a_plane_point_at_the_viewpoint() -> None:
    rng = np.random.default_rng(1)
    p = np.column_stack([rng.uniform(-1, 1, (300, 2)), np.zeros(300)])
    up = estimate_normals(p, 0.3, 30, viewpoint=np.array([0, 0, 5.0]))
    np.testing.assert_allclose(up, np.tile([0, 0, 1.0], (300, 1)), atol=1e-9)
    down = estimate_normals(p, 0.3, 30, viewpoint=np.array([0, 0, -5.0]))
    np.testing.assert_allclose(down, -up, atol=1e-9)


def fpfh_loop(p: np.ndarray, n: np.ndarray, radius: float, max_nn: int) -> np.ndarray:
    """Per-point reference of Open3D's FPFH: SPFH over the other hybrid neighbours, then the 1/d^2 blend."""
    def nbrs(i):
        d = np.linalg.norm(p - p[i], axis=1)
        order = [j for j in np.argsort(d, kind="stable")[:max_nn] if d[j] <= radius]
        return [j for j in order if j != i], d

    def pair(i, j):
        d = p[j] - p[i]
        dist = np.linalg.norm(d)
        n1, n2 = n[i], n[j]
        a1, a2 = n1 @ d / dist, n2 @ d / dist
        if math.acos(min(abs(a1), 1)) > math.acos(min(abs(a2), 1)):
            n1, n2, d, phi = n2, n1, -d, -a2
        else:
            phi = a1
        v = np.cross(d, n1)
        v /= np.linalg.norm(v)
        w = np.cross(n1, v)
        return math.atan2(w @ n2, n1 @ n2), v @ n2, phi

    spfh = np.zeros((len(p), 33))
    for i in range(len(p)):
        js, _ = nbrs(i)
        for j in js:
            theta, alpha, phi = pair(i, j)
            for block, value in enumerate([(theta + math.pi) / (2 * math.pi), (alpha + 1) / 2, (phi + 1) / 2]):
                spfh[i, 11 * block + min(max(math.floor(11 * value), 0), 10)] += 100 / len(js)
    out = np.zeros((len(p), 33))
    for i in range(len(p)):
        js, d = nbrs(i)
        if not js:
            continue
        acc = sum(spfh[j] / d[j] ** 2 for j in js)
        for block in range(3):
            s = acc[11 * block:11 * block + 11].sum()
            out[i, 11 * block:11 * block + 11] = acc[11 * block:11 * block + 11] * (100 / s if s else 0)
        out[i] += spfh[i]
    return out


@pytest.mark.parametrize(("n", "max_nn"), [(120, 100), (200, 12)])
def test_fpfh_matches_the_per_point_loop(n: int, max_nn: int) -> None:
    p = scene(n, n=n)
    normals = estimate_normals(p, 0.3, 30)
    np.testing.assert_allclose(fpfh(p, normals, 0.4, max_nn), fpfh_loop(p, normals, 0.4, max_nn), atol=1e-9)


def test_normals_equivariant_and_fpfh_invariant_under_rotation() -> None:
    # noisy surfaces (exact planes put pair angles on bin edges) and a viewpoint off every plane, moved with the cloud
    p = scene(3, n=800) + np.random.default_rng(3).normal(scale=0.005, size=(800, 3))
    view = np.array([0.3, 0.2, 3.0])
    R = Rotation.random(random_state=3).as_matrix()
    n1, n2 = estimate_normals(p, 0.2, 30, view), estimate_normals(p @ R.T, 0.2, 30, R @ view)
    dense = (np.linalg.norm(p[:, None] - p[None], axis=2) <= 0.2).sum(1) >= 3  # fewer neighbours: (0, 0, 1)
    np.testing.assert_allclose(n1[dense] @ R.T, n2[dense], atol=1e-9)
    f, g = fpfh(p, n1, 0.5, 100), fpfh(p @ R.T, n1 @ R.T, 0.5, 100)
    # a few pair angles sit on a bin edge and flip under rounding, which moves some histograms a little
    assert np.abs(f - g).sum() / np.abs(f).sum() < 1e-3
    unrotated_normals = fpfh(p @ R.T, n1, 0.5, 100)
    assert np.abs(f - unrotated_normals).sum() / np.abs(f).sum() > 0.1
    sums = f.reshape(-1, 3, 11).sum(2)
    has = sums[:, 0] > 0
    np.testing.assert_allclose(sums[has], 200.0, rtol=1e-9)  # blended block (100) + own SPFH block (100)


def rigid(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_transform(Rotation.random(random_state=rng).as_matrix(), rng.uniform(-1, 1, 3))


@pytest.mark.parametrize("outlier_share", [0.0, 0.6])
def test_ransac_recovers_a_pose_from_noisy_correspondences(outlier_share: float) -> None:
    rng = np.random.default_rng(4)
    src = rng.uniform(-1, 1, (300, 3))
    T = rigid(4)
    dst = src @ T[:3, :3].T + T[:3, 3] + rng.normal(scale=0.005, size=(300, 3))
    corr = np.stack([np.arange(300), np.arange(300)], 1)
    bad = rng.random(300) < outlier_share
    corr[bad, 1] = rng.integers(0, 300, bad.sum())
    T_est, fit = ransac_registration(src, dst, corr, distance=0.05, max_iter=3000, rng=np.random.default_rng(0))
    assert rotation_error(T_est[:3, :3], T[:3, :3]) < 2.0
    assert translation_error(T_est[:3, 3], T[:3, 3]) < 0.03
    assert fit == pytest.approx(1 - bad.mean(), abs=0.05)


def test_icp_refines_a_perturbed_pose() -> None:
    src = scene(5, n=3000)
    T = rigid(5)
    dst = src @ T[:3, :3].T + T[:3, 3]
    off = make_transform(Rotation.from_rotvec([0.0, 0.04, 0.03]).as_matrix(), np.array([0.03, -0.02, 0.01]))
    T_icp, fit = icp(src, dst, off @ T, distance=0.1)
    assert rotation_error(T_icp[:3, :3], T[:3, :3]) < 0.3
    assert translation_error(T_icp[:3, 3], T[:3, 3]) < 0.005
    assert fit == pytest.approx(1.0)


def test_register_fpfh_on_a_geometry_world_pair() -> None:
    pair = point_cloud_pair(np.random.default_rng([0, 0]))
    reg = register_fpfh(pair.source, pair.target, 0.05, orient="centroid", rng=np.random.default_rng(0),
                        max_iter=2000)
    assert rotation_error(reg.T[:3, :3], pair.R) < 2.0
    assert translation_error(reg.T[:3, 3], pair.t) < 0.03
    assert verify_3d(reg.confidence)
    assert reg.confidence <= min(1.0, len(pair.target) / len(pair.source)) + 1e-12
    with pytest.raises(LowlabelError, match="orient"):
        register_fpfh(pair.source, pair.target, orient="up")


def test_verifiers_boundaries() -> None:
    assert verify_2d(30, 100) is True  # both thresholds inclusive
    assert verify_2d(29, 100) is False
    assert verify_2d(99, 99) is False  # fewer than 100 matches
    assert verify_2d(0, 0) is False
    np.testing.assert_array_equal(verify_2d(np.array([30, 60, 10]), np.array([100, 99, 20])), [True, False, False])
    assert verify_3d(0.3) is True and verify_3d(0.2999) is False
    np.testing.assert_array_equal(verify_3d(np.array([0.1, 0.3, 0.9])), [False, True, True])


def test_two_view_teacher_with_synthetic_descriptors() -> None:
    # 400 points seen by two cameras; each view's descriptor = a per-point code plus noise, 100 points unmatched
    rng = np.random.default_rng(6)
    X1 = np.column_stack([rng.uniform(-2, 2, 400), rng.uniform(-1.5, 1.5, 400), rng.uniform(4, 8, 400)])
    R, t = Rotation.from_rotvec([0.02, -0.1, 0.03]).as_matrix(), np.array([-0.5, 0.05, 0.1])
    K = np.array([[400.0, 0, 320], [0, 400, 240], [0, 0, 1]])
    h1, h2 = X1 @ K.T, (X1 @ R.T + t) @ K.T
    kp1, kp2 = h1[:, :2] / h1[:, 2:], h2[:, :2] / h2[:, 2:] + rng.normal(scale=0.3, size=(400, 2))
    codes = rng.normal(size=(400, 32))
    d1, d2 = codes + 0.05 * rng.normal(size=(400, 32)), codes + 0.05 * rng.normal(size=(400, 32))
    d2[300:] = rng.normal(size=(100, 32))
    label = two_view_teacher(kp1, kp2, d1, d2, K, K)
    assert label.num_matches >= 280 and verify_2d(label.num_inliers, label.num_matches)
    assert rotation_error(label.R, R) < 1.5
    assert angular_translation_error(label.t, t) < 3.0
    assert label.F[2, 2] == pytest.approx(1.0)


def test_sift_on_a_rendered_view() -> None:
    pair = image_pair(np.random.default_rng([1, 0]), ImagePairConfig(height=240, width=320))
    kp, d = sift(pair.img1, 500)
    assert 10 <= len(kp) <= 500 and d.shape == (len(kp), 128) and d.dtype == np.float32
    assert (kp >= 0).all() and (kp[:, 0] < 320).all() and (kp[:, 1] < 240).all()


def test_two_view_teacher_without_keypoints() -> None:
    blank = np.full((64, 64, 3), 128, np.uint8)
    kp, d = sift(blank)
    assert kp.shape == (0, 2) and d.shape == (0, 128)
    label = two_view_teacher(kp, kp, d, d, np.eye(3), np.eye(3))
    assert (label.num_inliers, label.num_matches) == (0, 0) and not verify_2d(label.num_inliers, label.num_matches)
    with pytest.raises(LowlabelError, match="uint8"):
        sift(blank.astype(np.float32))
