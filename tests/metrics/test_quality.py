"""Error-versus-reject curves and AOC on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from lowlabel.errors import LowlabelError
from lowlabel.metrics.quality import EVRC, aoc, error_versus_reject, pair_quality, plot_evrc, threshold_at_fmr


def test_threshold_at_fmr_by_hand() -> None:
    imp = np.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.4, 0.6, 0.8, 0.0])
    assert threshold_at_fmr(imp, 0.1) == 0.8  # one impostor (0.9) above: FMR 0.1
    assert threshold_at_fmr(imp, 0.05) == 0.9  # none above
    assert threshold_at_fmr(imp, 0.35) == 0.6  # three above


def test_aoc_on_hand_built_curves() -> None:
    x = np.array([0.0, 0.25, 0.5, 0.75, 0.95])
    flat = EVRC(x, np.full(5, 0.2), np.zeros(5), 1e-3)
    assert aoc(flat) == pytest.approx(0.05)  # nothing gained: 1 - 0.95
    assert aoc(flat, normalise=False) == pytest.approx(1 - 0.2 * 0.95)
    linear = EVRC(x, 0.2 * (1 - x / 0.95), np.zeros(5), 1e-3)
    assert aoc(linear) == pytest.approx(1 - 0.95 / 2)
    step = EVRC(x, np.array([0.4, 0.0, 0.0, 0.0, 0.0]), np.zeros(5), 1e-3)
    assert aoc(step) == pytest.approx(1 - 0.125)  # trapezoid of the first interval only
    with pytest.raises(LowlabelError, match="undefined"):
        aoc(EVRC(x, np.zeros(5), np.zeros(5), 1e-3))


def test_evrc_by_hand() -> None:
    # 4 genuine pairs, 10 impostors; the two failing genuine pairs have the lowest quality
    gen = np.array([0.95, 0.3, 0.92, 0.2])
    gen_q = np.array([0.9, 0.1, 0.8, 0.05])
    imp = np.linspace(0.0, 0.9, 10)
    imp_q = np.linspace(0.3, 1.0, 10)
    curve = error_versus_reject(gen, imp, gen_q, imp_q, fmr=0.05, fractions=[0.0, 1 / 14, 2 / 14, 0.5])
    # phi=0: threshold 0.9 (no impostor above) -> genuine <= 0.9: 0.3, 0.2 -> FNMR 2/4
    # phi=1/14: drop 1 pair (gen 0.2): FNMR 1/3; phi=2/14: drop both failing: 0
    np.testing.assert_allclose(curve.fnmr[:3], [0.5, 1 / 3, 0.0])
    # phi=0.5 drops 7 pairs: the two bad genuine and the 5 lowest impostors; threshold = max of the rest = 0.9
    assert curve.thresholds[3] == pytest.approx(0.9) and curve.fnmr[3] == 0.0
    fixed = error_versus_reject(gen, imp, gen_q, imp_q, fmr=0.05, fractions=[0.0, 0.5], recompute_threshold=False)
    assert (fixed.thresholds == 0.9).all()


def test_good_quality_beats_random_on_simulated_pairs() -> None:
    rng = np.random.default_rng(0)
    q = rng.random(4000)
    gen = 0.2 + 0.6 * q[:2000] + 0.1 * rng.standard_normal(2000)  # low quality -> low genuine score
    imp = 0.1 * rng.standard_normal(20000)
    imp_q = rng.random(20000)
    good = aoc(error_versus_reject(gen, imp, q[:2000], imp_q, fmr=1e-2))
    rand = aoc(error_versus_reject(gen, imp, rng.random(2000), imp_q, fmr=1e-2))
    assert good > 0.5 and abs(rand - 0.05) < 0.1


def test_pair_quality_and_plot(tmp_path) -> None:
    assert pair_quality(np.array([0.5, 0.2, 0.9]), np.array([[0, 2], [1, 2]])).tolist() == [0.5, 0.2]
    x = np.array([0.0, 0.5])
    path = plot_evrc({"a": EVRC(x, np.array([0.2, 0.1]), x, 1e-3), "b": EVRC(x, np.array([0.2, 0.2]), x, 1e-3)},
                     tmp_path / "evrc.png")
    assert path.stat().st_size > 1000
    with pytest.raises(LowlabelError, match="match"):
        error_versus_reject(np.zeros(3), np.zeros(4), np.zeros(2), np.zeros(4))
