"""The comparison baselines: imputations by hand, CCA against a second formulation (Björck-Golub: singular values
of Q_xᵀ Q_y), no baseline reads a missing view, and the demo's settings are the tuning grid's winners."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lowlabel.files import read_json
from lowlabel.methods.completer import baselines, demo

TUNING = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "completer_tuning.json"


def test_fills_by_hand() -> None:
    x = np.array([[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]])
    y = np.array([[5.0], [7.0], [9.0]])
    mask = np.array([[1, 1], [1, 0], [0, 1]])
    zero = baselines.zero_fill([x, y], mask)
    np.testing.assert_array_equal(zero[0], [[1, 2], [3, 6], [0, 0]])
    np.testing.assert_array_equal(zero[1], [[5], [0], [9]])
    mean = baselines.mean_impute([x, y], mask)
    np.testing.assert_array_equal(mean[0], [[1, 2], [3, 6], [2, 4]])
    np.testing.assert_array_equal(mean[1], [[5], [7], [9]])
    std = baselines.standardise([x, y], mask)
    # view 1 over rows 0, 1: means (2, 4), stds (1, 2); z = ±1, divided by sqrt(2); the missing row at 0
    np.testing.assert_allclose(std[0], np.array([[-1, -1], [1, 1], [0, 0]]) / np.sqrt(2))
    np.testing.assert_allclose(std[1], [[-1], [0], [1]])  # rows 0, 2: mean 7, std 2; the missing row at 0


def test_cca_matches_the_qr_formulation_and_whitens() -> None:
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(400, 2))
    x = shared @ rng.normal(size=(2, 5)) + 0.5 * rng.normal(size=(400, 5))
    y = shared @ rng.normal(size=(2, 4)) + 0.5 * rng.normal(size=(400, 4))
    a, b, rho = baselines.cca(x, y, n_components=4, reg=0.0)
    qx, _ = np.linalg.qr(x - x.mean(axis=0))
    qy, _ = np.linalg.qr(y - y.mean(axis=0))
    np.testing.assert_allclose(rho, np.linalg.svd(qx.T @ qy, compute_uv=False), atol=1e-8)
    u, v = (x - x.mean(axis=0)) @ a, (y - y.mean(axis=0)) @ b
    np.testing.assert_allclose(np.cov(u.T), np.eye(4), atol=1e-8)
    np.testing.assert_allclose(np.cov(v.T), np.eye(4), atol=1e-8)
    np.testing.assert_allclose(np.diag(np.cov(u.T, v.T)[:4, 4:]), rho, atol=1e-8)
    assert rho[0] > 0.8 and rho[2] < 0.3  # two shared directions


@pytest.mark.parametrize("name", ["kmeans_zero_fill", "kmeans_mean_impute", "spectral", "cca_kmeans"])
def test_no_baseline_reads_a_missing_view(name: str) -> None:
    rng = np.random.default_rng(1)
    labels = np.arange(60) % 3
    centres = rng.normal(0, 3, (3, 7))
    views = [centres[labels][:, :4] + rng.normal(0, 0.3, (60, 4)), centres[labels][:, 4:] + rng.normal(0, 0.3, (60, 3))]
    mask = np.ones((60, 2), dtype=np.int64)
    mask[:20:2, 0] = 0
    mask[1:20:2, 1] = 0
    scrambled = [np.where(mask[:, v : v + 1] == 1, x, rng.normal(0, 50, x.shape)) for v, x in enumerate(views)]
    setting = {"kmeans_zero_fill": {"fill": "zero"}, "kmeans_mean_impute": {"fill": "standardised"},
               "spectral": {"n_neighbors": 10}, "cca_kmeans": {"n_components": 2, "reg": 0.1}}[name]
    from lowlabel.methods.completer.data import MultiView

    a = demo.baseline_scores(name, MultiView(views, labels), mask, setting, seed=0)
    b = demo.baseline_scores(name, MultiView(scrambled, labels), mask, setting, seed=0)
    assert a == b


def test_the_demo_settings_are_the_tuning_winners() -> None:
    rows = read_json(TUNING)["rows"]
    for approach, settings in demo.GRID.items():
        tried = [r for r in rows if r["approach"] == approach]
        assert sorted(r["setting"] for r in tried) == sorted(repr(s) for s in settings)
        assert max(tried, key=lambda r: r["acc"])["setting"] == repr(demo.CHOSEN[approach])
