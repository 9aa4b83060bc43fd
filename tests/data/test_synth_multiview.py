"""The multiview world: Noisy-MNIST-style digit pairs and the paper's missing-view mask."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.datasets import load_digits

from lowlabel.data.synth import multiview as M
from lowlabel.errors import LowlabelError


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return d.images / 16.0, d.target


@pytest.fixture(scope="module")
def data() -> M.MultiViewData:
    return M.two_view_digits(seed=0)


@pytest.mark.parametrize(("n", "n_views", "rate"), [(1000, 2, 0.5), (997, 2, 0.3), (600, 3, 0.5), (50, 4, 0.9)])
def test_mask_complete_fraction_is_exact(n: int, n_views: int, rate: float) -> None:
    mask = M.missing_view_mask(n, n_views, rate, seed=1)
    assert mask.shape == (n, n_views) and mask.dtype == np.int64
    assert set(np.unique(mask)) <= {0, 1}
    assert mask.sum(axis=1).min() >= 1
    complete = int((mask.sum(axis=1) == n_views).sum())
    assert complete == n - int(np.floor(rate * n + 0.5))


def test_mask_two_views_drops_each_view_about_half_the_time() -> None:
    mask = M.missing_view_mask(20000, 2, 0.5, seed=2)
    incomplete = mask[mask.sum(axis=1) < 2]
    assert len(incomplete) == 10000
    assert abs(float((incomplete[:, 0] == 0).mean()) - 0.5) < 0.02  # binomial std 0.005
    assert abs(float(mask.mean()) - 0.75) < 0.01


def test_mask_three_views_uniform_over_the_six_proper_subsets() -> None:
    mask = M.missing_view_mask(30000, 3, 0.6, seed=3)
    incomplete = mask[mask.sum(axis=1) < 3]
    codes = incomplete @ np.array([1, 2, 4])
    counts = np.bincount(codes, minlength=8)
    assert counts[0] == 0 and counts[7] == 0
    np.testing.assert_allclose(counts[1:7] / len(incomplete), 1 / 6, atol=0.015)


def test_mask_edge_rates_and_errors() -> None:
    np.testing.assert_array_equal(M.missing_view_mask(7, 2, 0.0, seed=0), np.ones((7, 2)))
    np.testing.assert_array_equal(M.missing_view_mask(5, 1, 0.0, seed=0), np.ones((5, 1)))
    high = M.missing_view_mask(1000, 2, 0.99, seed=0)
    assert (high.sum(axis=1) >= 1).all() and int((high.sum(axis=1) == 2).sum()) == 10
    for bad in [dict(missing_rate=1.0), dict(missing_rate=-0.1), dict(n=0), dict(n_views=0), dict(n_views=1)]:
        kwargs = {"n": 10, "n_views": 2, "missing_rate": 0.5, "seed": 0, **bad}
        with pytest.raises(LowlabelError, match="missing_view_mask"):
            M.missing_view_mask(**kwargs)


def test_mask_deterministic_by_seed() -> None:
    a = M.missing_view_mask(500, 3, 0.4, seed=5)
    assert np.array_equal(a, M.missing_view_mask(500, 3, 0.4, seed=5))
    assert not np.array_equal(a, M.missing_view_mask(500, 3, 0.4, seed=6))


def test_views_shapes_ranges_and_labels(data: M.MultiViewData, digits: tuple[np.ndarray, np.ndarray]) -> None:
    assert len(data) == 1797
    for v in data.views:
        assert v.dtype == np.float32 and v.shape == (1797, 256)
        assert v.min() >= 0 and v.max() <= 1
    assert data.labels.dtype == np.int64
    np.testing.assert_array_equal(data.sources[:, 0], np.arange(1797))
    np.testing.assert_array_equal(data.labels, digits[1])


def test_view2_is_another_sample_of_the_same_class(data: M.MultiViewData, digits) -> None:
    _, target = digits
    first, second = data.sources[:, 0], data.sources[:, 1]
    assert (first != second).all()
    np.testing.assert_array_equal(target[second], data.labels)
    assert len(np.unique(second)) > 1000  # partners are spread over the class, not one per class


def test_view1_is_the_rotated_source_and_view2_the_noisy_partner(data: M.MultiViewData, digits) -> None:
    images, _ = digits
    i = 10
    # Without rotation, output pixels 2k and 2k+1 sample the digit at k -+ 0.25 (bilinear), so each 2x2 block mean
    # is the digit filtered by [1/8, 3/4, 1/8] along both axes (zero outside).
    plain = M.two_view_digits(seed=0, max_angle=0.0, noise=0.0)
    kernel = [0.125, 0.75, 0.125]
    for view, src in ((0, i), (1, plain.sources[i, 1])):
        blocks = plain.views[view][i].reshape(8, 2, 8, 2).mean(axis=(1, 3))
        expected = ndimage.correlate1d(ndimage.correlate1d(images[src], kernel, axis=0, mode="constant"),
                                       kernel, axis=1, mode="constant")
        np.testing.assert_allclose(blocks, expected, atol=1e-6)
    # The rotated view matches the unrotated one rotated back by the recorded angle.
    angles = data.angles.astype(float)
    assert angles.min() < -40 and angles.max() > 40 and np.abs(angles).max() <= 45
    j = int(np.argmax(np.abs(angles)))
    undone = M._resample(data.views[0][j].reshape(1, 16, 16).astype(float), 16, -angles[j : j + 1])[0]
    centre = np.s_[4:12, 4:12]
    aligned = np.abs(undone[centre] - plain.views[0][j].reshape(16, 16)[centre]).mean()
    unaligned = np.abs(data.views[0][j].reshape(16, 16)[centre] - plain.views[0][j].reshape(16, 16)[centre]).mean()
    assert aligned < 0.5 * unaligned
    # Noise: where the partner digit is blank the noisy view is uniform on [0, 1].
    blank = plain.views[1] == 0
    assert abs(float(data.views[1][blank].mean()) - 0.5) < 0.01
    assert abs(float(data.views[1][blank].std()) - np.sqrt(1 / 12)) < 0.01


def test_rotation_turns_counter_clockwise() -> None:
    bar = np.zeros((1, 8, 8))
    bar[0, 3:5, 5:8] = 1  # right of the centre
    turned = M._resample(bar, 8, np.array([90.0]))[0]
    assert turned[:3].sum() > 5 and turned[5:].sum() == 0 and turned[:, 5:].sum() < 0.5


def test_subset_and_determinism() -> None:
    a = M.two_view_digits(seed=3, n=200)
    b = M.two_view_digits(seed=3, n=200)
    c = M.two_view_digits(seed=4, n=200)
    assert len(a) == 200 and (np.diff(a.sources[:, 0]) > 0).all()
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a.views, b.views, strict=True))
    assert a.views[1].tobytes() != c.views[1].tobytes()
    with pytest.raises(LowlabelError, match="n=0"):
        M.two_view_digits(n=0)


def test_same_bytes_in_a_fresh_interpreter() -> None:
    code = (
        "import hashlib; from lowlabel.data.synth import multiview as M; d = M.two_view_digits(seed=3, n=200); "
        "m = M.missing_view_mask(200, 3, 0.5, seed=3); "
        "print(hashlib.sha256(d.views[0].tobytes() + d.views[1].tobytes() + m.tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "7", "PYTHONPATH": str(Path(M.__file__).parents[3])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    d, m = M.two_view_digits(seed=3, n=200), M.missing_view_mask(200, 3, 0.5, seed=3)
    assert out.stdout.strip() == hashlib.sha256(d.views[0].tobytes() + d.views[1].tobytes() + m.tobytes()).hexdigest()


def test_dataset_zeroes_missing_views_and_batches() -> None:
    data = M.two_view_digits(seed=1, n=64)
    mask = M.missing_view_mask(64, 2, 0.5, seed=1)
    ds = M.MultiViewDataset(data, mask)
    i = int(np.flatnonzero(mask[:, 1] == 0)[0])
    item = ds[i]
    assert torch.equal(item["views"][1], torch.zeros(256))
    assert torch.equal(item["views"][0], torch.from_numpy(data.views[0][i]))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=64, num_workers=2)))
    assert batch["views"][0].shape == (64, 256) and batch["mask"].shape == (64, 2)
    np.testing.assert_array_equal(batch["views"][1].numpy(), data.views[1] * mask[:, 1:])
    np.testing.assert_array_equal(batch["label"].numpy(), data.labels)
    with pytest.raises(LowlabelError, match="at least one view"):
        M.MultiViewDataset(data, np.zeros((64, 2), np.int64))


def test_preview(tmp_path: Path) -> None:
    out = M.preview(n=3, out=tmp_path / "m.png", seed=0)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
