"""lowlabel.metrics.segmentation: hand-computed cube values, medpy's surface definition brute-forced, conventions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lowlabel.errors import LowlabelError
from lowlabel.metrics import segmentation as seg


def _cube(shape: tuple[int, int, int], lo: tuple[int, int, int], side: int) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[lo[0] : lo[0] + side, lo[1] : lo[1] + side, lo[2] : lo[2] + side] = 1
    return m


def _brute_surface_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Surface = voxels of the mask with a face neighbour outside the mask or outside the array; all-pairs distances."""

    def surface(m: np.ndarray) -> np.ndarray:
        padded = np.pad(m.astype(bool), 1)
        inner = padded[1:-1, 1:-1, 1:-1].copy()
        for axis, shift in itertools.product(range(3), (-1, 1)):
            inner &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(m.astype(bool) & ~inner) * np.asarray(spacing)

    pa, pb = surface(a), surface(b)
    return np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(axis=1)


def test_cube_against_shifted_cube_by_hand() -> None:
    # 4^3 cube vs the same cube shifted by 1 along x: overlap 3*4*4 = 48 voxels of 64.
    a = _cube((10, 10, 10), (2, 2, 2), 4)
    b = _cube((10, 10, 10), (3, 2, 2), 4)
    assert seg.dice(a, b) == pytest.approx(2 * 48 / 128)
    assert seg.jaccard(a, b) == pytest.approx(48 / 80)
    # Surface of a 4^3 cube: 64 - 2^3 = 56 voxels. A -> B: A's face x=2 (16 voxels) is 1 from B's face x=3; on A's
    # face x=5 the 4 voxels with y, z in {3, 4} are inside B, 1 from B's surface, the other 12 lie on it; A's 24
    # side-ring voxels at x = 3, 4 lie on B's surface. So 20 ones and 36 zeros.
    d_ab = _brute_surface_distances(a, b, (1, 1, 1))
    assert sorted(d_ab.tolist()) == [0.0] * 36 + [1.0] * 20
    assert seg.asd(a, b) == pytest.approx(20 / 56)
    # Symmetric: 95th percentile of 72 zeros and 40 ones (112 values) is 1.
    assert seg.hd95(a, b) == pytest.approx(1.0)


def test_hd95_and_asd_match_brute_force_with_spacing() -> None:
    rng = np.random.default_rng(0)
    a = np.zeros((9, 8, 7), dtype=np.uint8)
    b = np.zeros_like(a)
    a[1:6, 2:7, 0:4] = 1
    b[3:9, 1:5, 2:7] = 1
    a[rng.random(a.shape) < 0.05] = 1
    spacing = (0.7, 1.0, 1.6)
    d_ab = _brute_surface_distances(a, b, spacing)
    d_ba = _brute_surface_distances(b, a, spacing)
    assert seg.asd(a, b, spacing) == pytest.approx(d_ab.mean())
    assert seg.hd95(a, b, spacing) == pytest.approx(np.percentile(np.concatenate([d_ab, d_ba]), 95))
    assert seg.asd(a, b) == pytest.approx(_brute_surface_distances(a, b, (1, 1, 1)).mean())


def test_far_apart_cubes_distance() -> None:
    a = _cube((30, 8, 8), (1, 2, 2), 3)
    b = _cube((30, 8, 8), (21, 2, 2), 3)  # 20 voxels further along x
    assert seg.dice(a, b) == 0.0 and seg.jaccard(a, b) == 0.0
    d = _brute_surface_distances(a, b, (1, 1, 1))
    assert d.min() == pytest.approx(18.0)
    assert seg.asd(a, b) == pytest.approx(d.mean())


def test_empty_prediction_convention() -> None:
    ref = _cube((8, 8, 8), (2, 2, 2), 3)
    empty = np.zeros_like(ref)
    assert seg.case_metrics(empty, ref) == {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0}
    assert seg.hd95(empty, ref) == 0.0 and seg.asd(empty, ref) == 0.0
    assert np.isnan(seg.hd95(ref, empty)) and np.isnan(seg.asd(ref, empty))
    assert seg.dice(empty, empty) == 0.0 and seg.jaccard(empty, empty) == 0.0
    perfect = seg.case_metrics(ref, ref)
    assert perfect == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}


def test_largest_component_full_connectivity() -> None:
    m = np.zeros((10, 10, 10), dtype=np.uint8)
    m[0:3, 0:3, 0:3] = 1  # 27 voxels
    m[3, 3, 3] = 1  # touches the big cube only at a corner: joined under 26-connectivity
    m[7:9, 7:9, 7:9] = 1  # 8 voxels, separate
    out = seg.largest_component(m)
    assert out.dtype == m.dtype and int(out.sum()) == 28 and out[3, 3, 3] == 1 and out[8, 8, 8] == 0
    assert not seg.largest_component(np.zeros_like(m)).any()


def test_bad_inputs() -> None:
    with pytest.raises(LowlabelError, match="shape"):
        seg.dice(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)))
    with pytest.raises(LowlabelError, match="spacing"):
        seg.hd95(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing=(1.0, 1.0))


def test_confusion_miou_against_a_hand_computed_confusion_matrix() -> None:
    import torch

    target = torch.tensor([[0, 0, 0], [1, 1, 2]])
    pred = torch.tensor([[0, 0, 1], [1, 2, 2]])
    # confusion (rows target, columns prediction): [[2, 1, 0], [0, 1, 1], [0, 0, 1]]; class 3 absent from both.
    # IoU = TP / (row + column - TP): class 0: 2 / (3 + 2 - 2) = 2/3; class 1: 1 / (2 + 2 - 1) = 1/3;
    # class 2: 1 / (1 + 2 - 1) = 1/2. Class 3 does not count.
    assert seg.confusion_miou(pred, target, 4) == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    # everything predicted as class 0: IoU_0 = 3/6, classes 1 and 2 have IoU 0 and count (present in the target)
    assert seg.confusion_miou(torch.zeros_like(target), target, 3) == pytest.approx((3 / 6) / 3)
    assert seg.confusion_miou(target, target, 3) == 1.0
    # accumulated over the set, not averaged per image: row 1 alone gives (2/3 + 0) / 2, row 2 (1/2 + 1/2) / 2
    per_image = [seg.confusion_miou(p, t, 4) for p, t in zip(pred, target, strict=True)]
    assert per_image == pytest.approx([1 / 3, 1 / 2])
    assert seg.confusion_miou(pred, target, 4) == pytest.approx(0.5)  # not the per-image mean 5/12
