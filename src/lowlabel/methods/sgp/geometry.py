"""SGP's geometry: the official pose errors and recalls, weighted Procrustes, descriptor matching, the essential-matrix
teacher and F from poses (spec "Evaluation", "Teacher ... 2D", "Teacher ... 3D").

Conventions: points and matches are rows ((N, 3) points, (N, 2) pixel keypoints (x = column, y = row), (K, 2)
index pairs (i, j)); a rigid transform (R, t) or its (4, 4) matrix maps source to target, x_dst = R @ x_src + t.
Camera extrinsics T are world-to-camera (4, 4). Inputs may be numpy arrays or torch tensors; errors and matches come
back as numpy, `weighted_procrustes` returns the input's type (torch stays differentiable).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from lowlabel.errors import LowlabelError
from lowlabel.extras import require

Array = np.ndarray | torch.Tensor
COS_CLIP = 0.999999  # the official clip inside arccos: identical rotations read 0.0810 degrees
FALLBACK_MATCHES = 50  # 2D matching keeps the 50 best when fewer survive (official `match_feats`)
MIN_MUTUAL = 10  # 3D mutual matching falls back to plain nearest neighbours below this (official `match_feats`)


def _np(x: Array, name: str) -> np.ndarray:
    """float64 numpy copy of `x`, refusing NaN/inf."""
    out = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if not np.isfinite(out).all():
        raise LowlabelError(f"{name} holds NaN or inf values")
    return out


def _scalar_or_array(x: np.ndarray) -> float | np.ndarray:
    return float(x) if x.ndim == 0 else x


# ------------------------------------------------------------------------------------------------- pose errors


def rotation_error(R_est: Array, R_gt: Array) -> float | np.ndarray:
    """Angle of R_est^T R_gt in degrees: arccos(clip((tr - 1) / 2, +-0.999999)) (official `rotation_error`).

    R_est, R_gt: (3, 3) or batched (B, 3, 3) -> a float or (B,). The clip makes equal rotations read 0.0810 degrees
    and opposite ones 179.919, exactly as the official metric.
    """
    a, b = _np(R_est, "R_est"), _np(R_gt, "R_gt")
    if a.shape[-2:] != (3, 3) or a.shape != b.shape:
        raise LowlabelError(f"rotation_error needs two (3, 3) or (B, 3, 3) arrays, got {a.shape} and {b.shape}")
    trace = np.einsum("...ij,...ij->...", a, b)  # trace(a^T b)
    return _scalar_or_array(np.degrees(np.arccos(np.clip((trace - 1) / 2, -COS_CLIP, COS_CLIP))))


def translation_error(t_est: Array, t_gt: Array) -> float | np.ndarray:
    """Euclidean distance ||t_est - t_gt|| (metres for 3DMatch). t: (3,) or (B, 3) -> a float or (B,)."""
    a, b = _np(t_est, "t_est"), _np(t_gt, "t_gt")
    if a.shape[-1:] != (3,) or a.shape != b.shape:
        raise LowlabelError(f"translation_error needs two (3,) or (B, 3) arrays, got {a.shape} and {b.shape}")
    return _scalar_or_array(np.linalg.norm(a - b, axis=-1))


def angular_translation_error(t_est: Array, t_gt: Array) -> float | np.ndarray:
    """Angle between the translation directions in degrees, arccos(clip(<t_est/|t_est|, t_gt/|t_gt|>, +-0.999999)).

    t: (3,) or (B, 3) -> a float or (B,). Not sign-invariant (official): a flipped direction reads about 180. A zero
    vector has no direction: it raises a LowlabelError.
    """
    a, b = _np(t_est, "t_est"), _np(t_gt, "t_gt")
    if a.shape[-1:] != (3,) or a.shape != b.shape:
        raise LowlabelError(f"angular_translation_error needs two (3,) or (B, 3) arrays, got {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a, axis=-1, keepdims=True), np.linalg.norm(b, axis=-1, keepdims=True)
    if (na == 0).any() or (nb == 0).any():
        raise LowlabelError("angular_translation_error: a zero translation has no direction")
    cos = ((a / na) * (b / nb)).sum(-1)
    return _scalar_or_array(np.degrees(np.arccos(np.clip(cos, -COS_CLIP, COS_CLIP))))


def registration_recall(R_est: Array, R_gt: Array, t_est: Array, t_gt: Array, rot_thresh: float = 15.0,
                        trans_thresh: float = 0.3) -> float:
    """3D registration recall: share of pairs with rotation error < 15 degrees AND translation error < 0.30 m (SGP's
    3DMatch definition; not FCGF's RMSE < 0.2 m). R: (B, 3, 3) or (3, 3), t: (B, 3) or (3,)."""
    ok = (np.atleast_1d(rotation_error(R_est, R_gt)) < rot_thresh) & \
        (np.atleast_1d(translation_error(t_est, t_gt)) < trans_thresh)
    return float(ok.mean())


def relative_pose_recall(R_est: Array, R_gt: Array, t_est: Array, t_gt: Array,
                         thresh: float = 10.0) -> tuple[float, float]:
    """2D recalls, reported separately: (share with rotation error < 10 degrees, share with angular translation
    error < 10 degrees). R: (B, 3, 3), t: (B, 3)."""
    rot = np.atleast_1d(rotation_error(R_est, R_gt)) < thresh
    trans = np.atleast_1d(angular_translation_error(t_est, t_gt)) < thresh
    return float(rot.mean()), float(trans.mean())


# ---------------------------------------------------------------------------------------------------- rigid


def weighted_procrustes(A: Array, B: Array, weights: Array | None = None) -> tuple[Array, Array]:
    """(R, t) minimising sum_i w_i ||R a_i + t - b_i||^2 with det R = +1 (Kabsch/Umeyama with the reflection fix).

    A, B: (N, 3) source and target points (rows), or batched (..., N, 3); weights: (N,) or (..., N), >= 0, default 1.
    Returns R (..., 3, 3), t (..., 3) as numpy for numpy input and torch (differentiable) for torch input. The
    cross-covariance M = sum w (b - b̄)(a - ā)^T = U S V^T gives R = U diag(1, 1, det(U V^T)) V^T; t = b̄ - R ā.
    """
    is_torch = isinstance(A, torch.Tensor)
    a = A.double() if is_torch else torch.from_numpy(_np(A, "A"))
    b = (B.double() if isinstance(B, torch.Tensor) else torch.from_numpy(_np(B, "B"))).to(a.device)
    if a.shape[-1] != 3 or a.shape != b.shape or a.shape[-2] < 1:
        raise LowlabelError(f"weighted_procrustes needs A and B of the same shape (N, 3), got {tuple(a.shape)} and "
                            f"{tuple(b.shape)}")
    if weights is None:
        w = torch.ones(a.shape[:-1], dtype=a.dtype, device=a.device)
    else:
        w = weights.double() if isinstance(weights, torch.Tensor) else torch.from_numpy(_np(weights, "weights"))
        w = w.to(a.device).expand(a.shape[:-1])
    if (w < 0).any() or (w.sum(-1) <= 0).any():
        raise LowlabelError("weighted_procrustes: weights must be >= 0 with a positive sum")
    wn = (w / w.sum(-1, keepdim=True)).unsqueeze(-1)  # (..., N, 1)
    ca, cb = (wn * a).sum(-2), (wn * b).sum(-2)  # (..., 3)
    m = ((b - cb.unsqueeze(-2)) * wn).transpose(-1, -2) @ (a - ca.unsqueeze(-2))  # (..., 3, 3)
    u, _, vh = torch.linalg.svd(m)
    fix = torch.ones(m.shape[:-1], dtype=m.dtype, device=m.device)
    fix[..., 2] = torch.linalg.det(u @ vh)
    R = (u * fix.unsqueeze(-2)) @ vh
    t = cb - (R @ ca.unsqueeze(-1)).squeeze(-1)
    if is_torch:
        return R.to(A.dtype), t.to(A.dtype)
    return R.numpy(), t.numpy()


def make_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) homogeneous matrix of (R (3, 3), t (3,))."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def apply_transform(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """points (N, 3) moved by the (4, 4) transform: points @ R^T + t."""
    return points @ T[:3, :3].T + T[:3, 3]


# ------------------------------------------------------------------------------------------------- matching


def match_features(f_src: Array, f_dst: Array, mutual: bool = False) -> np.ndarray:
    """3D feature matching: each source feature's nearest target feature (L2, exact k-d tree) -> (K, 2) int64 (i, j).

    f_src (N, D), f_dst (M, D). Without `mutual`, K = N (official FCGF teaching). With `mutual`, only pairs that are
    each other's nearest neighbour, unless fewer than 10 survive: then plain nearest neighbours (official FPFH path).
    """
    a, b = _np(f_src, "f_src"), _np(f_dst, "f_dst")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) == 0 or len(b) == 0:
        raise LowlabelError(f"match_features needs two non-empty (N, D) arrays, got {a.shape} and {b.shape}")
    nn01 = cKDTree(b).query(a, k=1, workers=-1)[1]
    pairs = np.stack([np.arange(len(a)), nn01], axis=1).astype(np.int64)
    if not mutual:
        return pairs
    nn10 = cKDTree(a).query(b, k=1, workers=-1)[1]
    keep = nn10[nn01] == np.arange(len(a))
    return pairs[keep] if keep.sum() >= MIN_MUTUAL else pairs


def _two_nearest(d1: torch.Tensor, d2: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances (N, k) and indices (N, k) of the k = min(2, M) nearest rows of d2 for each row of d1 (exact L2)."""
    k = min(2, len(d2))
    dists, idx = [], []
    for start in range(0, len(d1), chunk):
        d = torch.cdist(d1[start:start + chunk], d2)
        v, i = d.topk(k, dim=1, largest=False)
        dists.append(v)
        idx.append(i)
    return torch.cat(dists), torch.cat(idx)


def match_descriptors(d1: Array, d2: Array, ratio: float = 0.75, cross_check: bool = False) -> np.ndarray:
    """2D descriptor matching (brute-force L2) -> (K, 2) int64 rows (i, j), as the official `match_feats`.

    d1 (N, D), d2 (M, D). Ratio path (`cross_check=False`, the bootstrap): keep i -> nn(i) when dist1 < ratio * dist2;
    if fewer than 50 survive, the 50 with the best ratio instead (sorted by ratio). Cross-check path (later rounds):
    mutual nearest neighbours; if fewer than 50, the 50 smallest-distance plain nearest neighbours (sorted by
    distance). Surviving matches are in query order. With a single target descriptor the ratio test cannot run
    (OpenCV's knnMatch would give one neighbour and the official unpacking would fail): that match is kept.
    """
    a = torch.as_tensor(_np(d1, "d1"), dtype=torch.float32)
    b = torch.as_tensor(_np(d2, "d2"), dtype=torch.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) == 0 or len(b) == 0:
        raise LowlabelError(f"match_descriptors needs two non-empty (N, D) arrays, got {tuple(a.shape)} and "
                            f"{tuple(b.shape)}")
    dist, idx = _two_nearest(a, b)
    rows = torch.arange(len(a))
    if not cross_check:
        second = dist[:, 1] if dist.shape[1] > 1 else torch.full_like(dist[:, 0], float("inf"))
        keep = dist[:, 0] < ratio * second
        if keep.sum() >= FALLBACK_MATCHES:
            return torch.stack([rows[keep], idx[keep, 0]], 1).numpy().astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (dist[:, 0] / second).numpy()
        order = np.argsort(np.nan_to_num(r, nan=1.0), kind="stable")[:FALLBACK_MATCHES]
        return np.stack([order, idx[order, 0].numpy()], 1).astype(np.int64)
    back = _two_nearest(b, a)[1][:, 0]
    keep = back[idx[:, 0]] == rows
    if keep.sum() >= FALLBACK_MATCHES:
        return torch.stack([rows[keep], idx[keep, 0]], 1).numpy().astype(np.int64)
    order = np.argsort(dist[:, 0].numpy(), kind="stable")[:FALLBACK_MATCHES]
    return np.stack([order, idx[order, 0].numpy()], 1).astype(np.int64)


# ------------------------------------------------------------------------------------------------ two views


def skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrix [v]_x (3, 3) of v (3,): [v]_x w = v x w."""
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def relative_pose(T_src: Array, T_dst: Array) -> np.ndarray:
    """src-camera -> dst-camera transform T_dst @ inv(T_src) (4, 4) from world-to-camera extrinsics (4, 4)."""
    return _np(T_dst, "T_dst") @ np.linalg.inv(_np(T_src, "T_src"))


def fundamental_from_essential(E: np.ndarray, K_src: np.ndarray, K_dst: np.ndarray) -> np.ndarray:
    """F = K_dst^-T E K_src^-1 (3, 3), unscaled: the essential matrix in pixel coordinates."""
    return np.linalg.inv(K_dst).T @ E @ np.linalg.inv(K_src)


def fundamental_from_poses(K_src: Array, K_dst: Array, T_src: Array, T_dst: Array) -> np.ndarray:
    """F (3, 3) = K_dst^-T [t]_x R K_src^-1 with (R, t) = T_dst inv(T_src): x_dst^T F x_src = 0 for pixels (x, y, 1).

    K: (3, 3) intrinsics; T: (4, 4) world-to-camera extrinsics. Not rescaled (official
    `compute_fundamental_from_poses`; the training adaptor divides by F[2, 2] afterwards).
    """
    rel = relative_pose(T_src, T_dst)
    E = skew(rel[:3, 3]) @ rel[:3, :3]
    return fundamental_from_essential(E, _np(K_src, "K_src"), _np(K_dst, "K_dst"))


def normalise_keypoints(kp: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) -> normalised image coordinates (N, 2) through K^-1 (cv2.undistortPoints without distortion)."""
    h = np.concatenate([kp, np.ones((len(kp), 1))], axis=1) @ np.linalg.inv(K).T
    return h[:, :2] / h[:, 2:]


def essential_teacher(kp1: Array, kp2: Array, K1: Array, K2: Array, threshold: float = 1e-3,
                      prob: float = 0.999) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The official 2D teacher: 5-point RANSAC on normalised coordinates, then recoverPose on the inliers.

    kp1, kp2: (N, 2) matched pixel keypoints (row n of each is one match); K1, K2: (3, 3). Keypoints go through K^-1,
    then `cv2.findEssentialMat` (focal 1, principal point 0, RANSAC, `prob`, `threshold` in normalised units, OpenCV's
    1000 iterations) and `cv2.recoverPose` on the RANSAC inliers. Returns R (3, 3), t (3,) unit-norm with
    x2 = R x1 + t (camera coordinates), the inlier mask (N,) bool and F = K2^-T E K1^-1 / F[2, 2] (the pseudo-label).
    With 5 or fewer matches, or when RANSAC finds no single E (several stacked solutions), the result is the
    official failure value: R = I, t = 0, no inlier, F = I (the verifier rejects it: no inliers).
    """
    cv2 = require("cv2", "geometry", "the essential-matrix teacher")

    p1, p2 = _np(kp1, "kp1"), _np(kp2, "kp2")
    k1, k2 = _np(K1, "K1"), _np(K2, "K2")
    if p1.ndim != 2 or p1.shape[1:] != (2,) or p1.shape != p2.shape or k1.shape != (3, 3) or k2.shape != (3, 3):
        raise LowlabelError(f"essential_teacher needs kp1, kp2 (N, 2) and K1, K2 (3, 3); got {p1.shape}, {p2.shape}, "
                            f"{k1.shape}, {k2.shape}")
    failure = (np.eye(3), np.zeros(3), np.zeros(len(p1), dtype=bool), np.eye(3))
    if len(p1) <= 5:
        return failure
    n1, n2 = normalise_keypoints(p1, k1), normalise_keypoints(p2, k2)
    E, mask = cv2.findEssentialMat(n1, n2, focal=1.0, pp=(0.0, 0.0), method=cv2.RANSAC, prob=prob,
                                   threshold=threshold)
    if E is None or E.shape != (3, 3) or mask is None:
        return failure
    inliers = mask.ravel().astype(bool)
    _, R, t, _ = cv2.recoverPose(E, n1[inliers], n2[inliers])
    F = fundamental_from_essential(E, k1, k2)
    return R, t.ravel(), inliers, F / (F[2, 2] + 1e-16)
