"""Face image quality metrics: error-versus-reject curves (EVRC), the area over them (AOC), and a plot.

Spec sdd_fiqa.md, "Evaluation protocol". The pair quality is the minimum of the two image scores; the lowest-quality
fraction phi of all pairs (genuine and impostor together) is discarded; on the pairs kept, the score threshold is the
one whose false-match rate on the kept impostor pairs is at most the target FMR (recomputed at every phi by default,
or fixed at phi = 0); the curve is the false non-match rate (FNMR) of the kept genuine pairs at that threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lowlabel.errors import LowlabelError
from lowlabel.report.figures import figure, save_figure

DEFAULT_FRACTIONS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(20))  # 0, 0.05, ..., 0.95


@dataclass(frozen=True)
class EVRC:
    """One error-versus-reject curve: rejected fractions (F,), FNMR (F,) and the thresholds used (F,)."""

    fractions: np.ndarray
    fnmr: np.ndarray
    thresholds: np.ndarray
    fmr: float


def threshold_at_fmr(impostor: np.ndarray, fmr: float) -> float:
    """Score threshold t with FMR(t) = #{impostor > t} / n <= fmr, the lowest such (pairs match when score > t).

    impostor (n,). t is the (floor(fmr * n) + 1)-th largest impostor score.
    """
    if impostor.size == 0:
        raise LowlabelError("no impostor pair left to set the threshold; reject a smaller fraction or add pairs")
    allowed = int(np.floor(fmr * impostor.size))
    return float(np.sort(impostor)[::-1][min(allowed, impostor.size - 1)])


def error_versus_reject(
    genuine_scores: np.ndarray,
    impostor_scores: np.ndarray,
    genuine_quality: np.ndarray,
    impostor_quality: np.ndarray,
    *,
    fmr: float = 1e-3,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    recompute_threshold: bool = True,
    seed: int = 0,
) -> EVRC:
    """EVRC: FNMR at the threshold for `fmr` as the lowest-quality fraction of pairs is rejected.

    genuine_scores (G,), impostor_scores (I,): comparison scores (higher = more similar); *_quality: pair qualities
    (e.g. `pair_quality`), same shapes. Ties in quality are broken by a seeded random order (`seed`), so a score
    with many equal values (e.g. clean images all at quality 1) does not favour genuine or impostor pairs.
    """
    gs, is_ = np.asarray(genuine_scores, float), np.asarray(impostor_scores, float)
    gq, iq = np.asarray(genuine_quality, float), np.asarray(impostor_quality, float)
    if gs.shape != gq.shape or is_.shape != iq.shape or gs.ndim != 1 or is_.ndim != 1:
        raise LowlabelError(f"scores and qualities must be 1-D and match: genuine {gs.shape} vs {gq.shape}, "
                            f"impostor {is_.shape} vs {iq.shape}")
    if gs.size == 0 or is_.size == 0:
        raise LowlabelError("need at least one genuine and one impostor pair")
    if not 0 < fmr < 1 or any(not 0 <= f < 1 for f in fractions):
        raise LowlabelError(f"fmr must lie in (0, 1) and fractions in [0, 1); got fmr={fmr}, fractions={fractions}")
    quality = np.concatenate([gq, iq])
    is_genuine = np.concatenate([np.ones(gs.size, bool), np.zeros(is_.size, bool)])
    scores = np.concatenate([gs, is_])
    tiebreak = np.random.default_rng(seed).random(quality.size)
    order = np.lexsort((tiebreak, quality))
    fixed = threshold_at_fmr(is_, fmr)
    fnmr, thresholds = [], []
    for phi in fractions:
        kept = order[round(phi * quality.size) :]
        keep_gen = scores[kept[is_genuine[kept]]]
        t = threshold_at_fmr(scores[kept[~is_genuine[kept]]], fmr) if recompute_threshold else fixed
        fnmr.append(float(np.mean(keep_gen <= t)) if keep_gen.size else float("nan"))
        thresholds.append(t)
    return EVRC(np.asarray(fractions, float), np.asarray(fnmr), np.asarray(thresholds), fmr)


def aoc(curve: EVRC, normalise: bool = True) -> float:
    """Area over the EVRC: 1 - integral FNMR(phi) dphi by the trapezoid rule over the curve's fractions.

    With `normalise` (default) FNMR is divided by its value at the first fraction (no rejection), the form that
    reproduces the paper's numbers (spec: AOC = 1 - integral_0^0.95 FNMR(phi)/FNMR(0) dphi, not divided by 0.95);
    random rejection then gives about 0.05, perfect rejection of every error at once about 1.
    """
    y = curve.fnmr
    if np.isnan(y).any():
        raise LowlabelError("the EVRC has NaN points (no genuine pair left): reject a smaller fraction")
    if normalise:
        if y[0] <= 0:
            raise LowlabelError("FNMR is 0 without rejection, so the normalised AOC is undefined; use a lower FMR")
        y = y / y[0]
    x = curve.fractions
    return float(1.0 - np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def pair_quality(quality: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Quality of image pairs = min of the two image qualities. quality (N,), pairs (P, 2) indices -> (P,)."""
    q = np.asarray(quality, float)
    return np.minimum(q[pairs[:, 0]], q[pairs[:, 1]])


def plot_evrc(curves: Mapping[str, EVRC], path: str | Path, title: str = "error versus reject") -> Path:
    """One figure with the EVRC of several quality scores (legend: name and normalised AOC); writes a PNG."""
    fig, ax = figure(figsize=(5.5, 4))
    for name, curve in curves.items():
        ax.plot(curve.fractions, curve.fnmr, marker="o", ms=3, label=f"{name} (AOC {aoc(curve):.3f})")
    fmr = next(iter(curves.values())).fmr if curves else 0.0
    ax.set_xlabel("fraction of lowest-quality pairs rejected")
    ax.set_ylabel(f"FNMR at FMR = {fmr:g}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
