"""SGP geometry: official pose errors on hand-made poses, Procrustes against SciPy's Wahba solver, matching against
brute-force loops, the essential teacher on a synthetic two-view scene, F from poses against the epipolar constraint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from lowlabel.data.synth.geometry import ImagePairConfig, image_pair
from lowlabel.errors import LowlabelError
from lowlabel.methods.sgp.geometry import (
    angular_translation_error,
    essential_teacher,
    fundamental_from_poses,
    match_descriptors,
    match_features,
    registration_recall,
    relative_pose_recall,
    rotation_error,
    translation_error,
    weighted_procrustes,
)

CLIP_DEG = math.degrees(math.acos(0.999999))  # 0.0810 degrees


def rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])


# ------------------------------------------------------------------------------------------------- pose errors


@pytest.mark.parametrize("deg", [5.0, 30.0, 90.0, 135.0])
def test_rotation_error_hand_made(deg: float) -> None:
    assert rotation_error(rot_z(deg), np.eye(3)) == pytest.approx(deg, abs=1e-9)
    assert rotation_error(np.eye(3), rot_z(-deg)) == pytest.approx(deg, abs=1e-9)  # symmetric in sign


def test_rotation_error_official_clip_and_batch() -> None:
    assert rotation_error(np.eye(3), np.eye(3)) == pytest.approx(CLIP_DEG, abs=1e-9)
    assert rotation_error(rot_z(180), np.eye(3)) == pytest.approx(180 - CLIP_DEG, abs=1e-9)
    batch = np.stack([rot_z(10), rot_z(20), rot_z(45)])
    got = rotation_error(torch.from_numpy(batch), np.stack([np.eye(3)] * 3))
    np.testing.assert_allclose(got, [10, 20, 45], atol=1e-9)
    with pytest.raises(LowlabelError, match="rotation_error"):
        rotation_error(np.eye(3), np.eye(4))


def test_translation_errors_hand_made() -> None:
    assert translation_error(np.array([1.0, 2, 2]), np.zeros(3)) == pytest.approx(3.0)
    assert angular_translation_error(np.array([1.0, 0, 0]), np.array([0, 5.0, 0])) == pytest.approx(90.0)
    assert angular_translation_error(np.array([1.0, 1, 0]), np.array([2.0, 0, 0])) == pytest.approx(45.0)
    # not sign-invariant: the flipped direction reads the clipped maximum
    assert angular_translation_error(np.array([0, 0, 1.0]), np.array([0, 0, -3.0])) == pytest.approx(180 - CLIP_DEG)
    with pytest.raises(LowlabelError, match="zero translation"):
        angular_translation_error(np.zeros(3), np.ones(3))


def test_registration_recall_thresholds_are_strict() -> None:
    R_gt = np.stack([np.eye(3)] * 4)
    R_est = np.stack([rot_z(14.9), rot_z(15.1), rot_z(1), rot_z(1)])
    t_gt = np.zeros((4, 3))
    t_est = np.array([[0.1, 0, 0], [0, 0, 0], [0.2999, 0, 0], [0.3001, 0, 0]])
    assert registration_recall(R_est, R_gt, t_est, t_gt) == pytest.approx(0.5)  # pairs 0 and 2 pass
    assert registration_recall(rot_z(3), np.eye(3), np.zeros(3), np.zeros(3)) == 1.0


def test_relative_pose_recall_counts_rotation_and_direction_apart() -> None:
    R_gt = np.stack([np.eye(3)] * 2)
    R_est = np.stack([rot_z(5), rot_z(12)])
    t_gt = np.array([[1.0, 0, 0], [1.0, 0, 0]])
    t_est = np.array([[1.0, 0.5, 0], [1.0, 0.01, 0]])  # 26.6 and 0.6 degrees
    assert relative_pose_recall(R_est, R_gt, t_est, t_gt) == (0.5, 0.5)


# ------------------------------------------------------------------------------------------------ Procrustes


def wahba(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: SciPy's proper-rotation Wahba solver on weighted-centred points."""
    ca, cb = (w[:, None] * a).sum(0) / w.sum(), (w[:, None] * b).sum(0) / w.sum()
    rot, _ = Rotation.align_vectors(b - cb, a - ca, weights=w)
    R = rot.as_matrix()
    return R, cb - R @ ca


@pytest.mark.parametrize("n", [3, 10, 200])
def test_procrustes_recovers_a_known_pose(n: int) -> None:
    rng = np.random.default_rng(n)
    R = Rotation.random(random_state=rng).as_matrix()
    t = rng.normal(size=3)
    a = rng.normal(size=(n, 3))
    R_est, t_est = weighted_procrustes(a, a @ R.T + t)
    np.testing.assert_allclose(R_est, R, atol=1e-10)
    np.testing.assert_allclose(t_est, t, atol=1e-10)


def test_procrustes_down_weights_outliers() -> None:
    rng = np.random.default_rng(1)
    R, t = Rotation.random(random_state=rng).as_matrix(), np.array([0.5, -1.0, 2.0])
    a = rng.normal(size=(60, 3))
    b = a @ R.T + t
    b[:20] = rng.normal(scale=3.0, size=(20, 3))  # a third are outliers
    w = np.ones(60)
    w[:20] = 0.0
    R0, t0 = weighted_procrustes(a, b, w)
    np.testing.assert_allclose(R0, R, atol=1e-10)
    np.testing.assert_allclose(t0, t, atol=1e-10)
    w[:20] = 1e-3  # small but non-zero weights: the solution is SciPy's weighted optimum, close to the truth
    R1, t1 = weighted_procrustes(a, b, w)
    R_ref, t_ref = wahba(a, b, w)
    np.testing.assert_allclose(R1, R_ref, atol=1e-8)
    np.testing.assert_allclose(t1, t_ref, atol=1e-8)
    assert rotation_error(R1, R) < 1.0
    R_plain, _ = weighted_procrustes(a, b)
    assert rotation_error(R_plain, R) > rotation_error(R1, R)


def test_procrustes_reflection_case_returns_a_proper_rotation() -> None:
    # target = mirror image of the source: the best orthogonal map is a reflection (det -1), which must be refused
    rng = np.random.default_rng(2)
    a = rng.normal(size=(30, 3)) * [3.0, 2.0, 1.0]
    b = a * [1.0, 1.0, -1.0]
    w = rng.uniform(0.5, 2.0, size=30)
    R, t = weighted_procrustes(a, b, w)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    R_ref, t_ref = wahba(a, b, w)
    np.testing.assert_allclose(R, R_ref, atol=1e-8)
    np.testing.assert_allclose(t, t_ref, atol=1e-8)


def test_procrustes_torch_batched_and_differentiable() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 8, 3, generator=g, dtype=torch.float64)
    Rs = torch.from_numpy(Rotation.random(4, random_state=0).as_matrix())
    b = (a @ Rs.transpose(1, 2) + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).requires_grad_(True)
    R, t = weighted_procrustes(a, b)
    assert isinstance(R, torch.Tensor) and R.shape == (4, 3, 3) and t.shape == (4, 3)
    torch.testing.assert_close(R, Rs)
    (R.sum() + t.sum()).backward()
    assert b.grad is not None and torch.isfinite(b.grad).all()
    with pytest.raises(LowlabelError, match="weights"):
        weighted_procrustes(a[0].numpy(), b[0].detach().numpy(), np.zeros(8))


# -------------------------------------------------------------------------------------------------- matching


def brute_nn(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.array([[np.linalg.norm(p - q) for q in y] for p in x])
    order = np.argsort(d, axis=1, kind="stable")
    return order, np.take_along_axis(d, order, axis=1)


@pytest.mark.parametrize("n", [15, 40])
def test_match_features_against_loops(n: int) -> None:
    rng = np.random.default_rng(n)
    f0, f1 = rng.normal(size=(n, 5)), rng.normal(size=(n + 7, 5))
    nn01, _ = brute_nn(f0, f1)
    nn10, _ = brute_nn(f1, f0)
    plain = match_features(f0, f1)
    np.testing.assert_array_equal(plain, np.stack([np.arange(n), nn01[:, 0]], 1))
    mutual_ref = [(i, nn01[i, 0]) for i in range(n) if nn10[nn01[i, 0], 0] == i]
    got = match_features(f0, f1, mutual=True)
    expected = np.array(mutual_ref) if len(mutual_ref) >= 10 else plain
    np.testing.assert_array_equal(got, expected)


def test_match_features_mutual_fallback_below_ten() -> None:
    # every source point has the same nearest target: one mutual pair only -> plain nearest neighbours
    f0 = np.linspace(0, 1, 20)[:, None] * [1.0, 0.0]
    f1 = np.array([[0.5, 0.0], [50.0, 0.0], [60.0, 0.0]])
    got = match_features(f0, f1, mutual=True)
    assert len(got) == 20 and (got[:, 1] == 0).all()


def test_match_descriptors_ratio_test_against_loop() -> None:
    rng = np.random.default_rng(3)
    d2 = rng.normal(size=(120, 16))
    d1 = np.concatenate([d2[:80] + 0.05 * rng.normal(size=(80, 16)), rng.normal(size=(40, 16))])
    order, dist = brute_nn(d1, d2)
    keep = [i for i in range(len(d1)) if dist[i, 0] < 0.75 * dist[i, 1]]
    assert len(keep) >= 50
    got = match_descriptors(d1, d2)
    np.testing.assert_array_equal(got, np.array([(i, order[i, 0]) for i in keep]))


def test_match_descriptors_ratio_fallback_takes_the_50_best_ratios() -> None:
    rng = np.random.default_rng(4)
    d1, d2 = rng.normal(size=(90, 8)), rng.normal(size=(70, 8))  # random: few pass the ratio test
    order, dist = brute_nn(d1, d2)
    ratios = dist[:, 0] / dist[:, 1]
    assert (ratios < 0.75).sum() < 50
    best = np.argsort(ratios, kind="stable")[:50]
    np.testing.assert_array_equal(match_descriptors(d1, d2), np.stack([best, order[best, 0]], 1))


def test_match_descriptors_cross_check_and_its_fallback() -> None:
    rng = np.random.default_rng(5)
    d2 = rng.normal(size=(100, 8))
    d1 = d2[rng.permutation(100)] + 0.01 * rng.normal(size=(100, 8))
    order, _ = brute_nn(d1, d2)
    back, _ = brute_nn(d2, d1)
    mutual = [(i, order[i, 0]) for i in range(100) if back[order[i, 0], 0] == i]
    np.testing.assert_array_equal(match_descriptors(d1, d2, cross_check=True), np.array(mutual))
    e1, e2 = rng.normal(size=(60, 8)), rng.normal(size=(3, 8))  # at most 3 mutual pairs -> 50 smallest distances
    o, dd = brute_nn(e1, e2)
    best = np.argsort(dd[:, 0], kind="stable")[:50]
    np.testing.assert_array_equal(match_descriptors(e1, e2, cross_check=True), np.stack([best, o[best, 0]], 1))


# ------------------------------------------------------------------------------------------------- two views


def project(X: np.ndarray, K: np.ndarray) -> np.ndarray:
    x = X @ K.T
    return x[:, :2] / x[:, 2:]


def two_view_scene(seed: int, n: int = 300) -> tuple[np.ndarray, ...]:
    """Points in front of two cameras: X2 = R X1 + t; returns kp1, kp2, K1, K2, R, t."""
    rng = np.random.default_rng(seed)
    X1 = np.column_stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(4, 8, n)])
    R = Rotation.from_rotvec(rng.normal(size=3) * 0.08).as_matrix()
    t = np.array([-0.6, 0.1, 0.05]) + rng.normal(scale=0.05, size=3)
    K1 = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    K2 = np.array([[450.0, 0, 300], [0, 460, 250], [0, 0, 1]])
    return project(X1, K1), project(X1 @ R.T + t, K2), K1, K2, R, t


@pytest.mark.parametrize("seed", [0, 1])
def test_essential_teacher_recovers_a_synthetic_pose(seed: int) -> None:
    kp1, kp2, K1, K2, R, t = two_view_scene(seed)
    rng = np.random.default_rng(seed + 10)
    kp2 = kp2 + rng.normal(scale=0.2, size=kp2.shape)
    outliers = rng.choice(len(kp1), 60, replace=False)
    kp2[outliers] = rng.uniform([0, 0], [640, 480], size=(60, 2))
    R_est, t_est, mask, F = essential_teacher(kp1, kp2, K1, K2)
    assert rotation_error(R_est, R) < 1.5  # 0.2 px noise, plain RANSAC (no local optimisation)
    assert angular_translation_error(t_est, t) < 3.0
    assert np.linalg.norm(t_est) == pytest.approx(1.0)
    assert mask[outliers].mean() < 0.1 and np.delete(mask, outliers).mean() > 0.9
    assert F[2, 2] == pytest.approx(1.0)
    inl = np.delete(np.arange(len(kp1)), outliers)
    h1 = np.column_stack([kp1[inl], np.ones(len(inl))])
    h2 = np.column_stack([kp2[inl], np.ones(len(inl))])
    lines = h1 @ F.T
    dist = np.abs((h2 * lines).sum(1)) / np.linalg.norm(lines[:, :2], axis=1)
    assert np.median(dist) < 1.0  # pixels


def test_essential_teacher_failure_values() -> None:
    kp1, kp2, K1, K2, _, _ = two_view_scene(0, n=5)
    R, t, mask, F = essential_teacher(kp1, kp2, K1, K2)
    np.testing.assert_array_equal(R, np.eye(3))
    np.testing.assert_array_equal(t, np.zeros(3))
    assert mask.shape == (5,) and not mask.any()
    np.testing.assert_array_equal(F, np.eye(3))
    with pytest.raises(LowlabelError, match="essential_teacher"):
        essential_teacher(kp1, kp2[:4], K1, K2)


@pytest.mark.parametrize("seed", [0, 3])
def test_fundamental_from_poses_satisfies_the_epipolar_constraint(seed: int) -> None:
    rng = np.random.default_rng(seed)
    K_src = np.array([[600.0, 0, 320], [0, 610, 240], [0, 0, 1]])
    K_dst = np.array([[500.0, 0, 300], [0, 500, 200], [0, 0, 1]])
    T_src, T_dst = np.eye(4), np.eye(4)
    T_src[:3, :3] = Rotation.from_rotvec(rng.normal(size=3) * 0.1).as_matrix()
    T_src[:3, 3] = rng.normal(size=3)
    T_dst[:3, :3] = Rotation.from_rotvec(rng.normal(size=3) * 0.1).as_matrix() @ T_src[:3, :3]
    T_dst[:3, 3] = T_src[:3, 3] + np.array([0.7, 0.1, 0.0])
    X = rng.normal(size=(50, 3)) + np.linalg.inv(T_src)[:3, :3] @ np.array([0, 0, 6.0])  # in front of camera 1
    world = np.column_stack([X, np.ones(50)])
    x1 = project((world @ T_src.T)[:, :3], K_src)
    x2 = project((world @ T_dst.T)[:, :3], K_dst)
    F = fundamental_from_poses(K_src, K_dst, T_src, T_dst)
    h1, h2 = np.column_stack([x1, np.ones(50)]), np.column_stack([x2, np.ones(50)])
    lines = h1 @ F.T
    dist = np.abs((h2 * lines).sum(1)) / np.linalg.norm(lines[:, :2], axis=1)
    assert dist.max() < 1e-8  # pixels
    wrong = fundamental_from_poses(K_src, K_dst, T_src, np.eye(4))
    lines = h1 @ wrong.T
    assert (np.abs((h2 * lines).sum(1)) / np.linalg.norm(lines[:, :2], axis=1)).max() > 1.0


def test_fundamental_from_poses_agrees_with_the_geometry_world() -> None:
    pair = image_pair(np.random.default_rng([0, 3]), ImagePairConfig())
    T2 = np.eye(4)
    T2[:3, :3], T2[:3, 3] = pair.R, pair.t
    F = fundamental_from_poses(pair.K, pair.K, np.eye(4), T2)
    ref = pair.fundamental
    np.testing.assert_allclose(F / F[2, 2], ref / ref[2, 2], rtol=1e-9, atol=1e-12)
