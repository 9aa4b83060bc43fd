"""SGP losses against per-point loops of the official formulas and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.sgp.losses import caps_loss, epipolar_distance, hardest_contrastive_loss, std_weights


def line_distance(x1: np.ndarray, x2: np.ndarray, F: np.ndarray) -> float:
    line = F @ np.array([x1[0], x1[1], 1.0])
    return abs(np.array([x2[0], x2[1], 1.0]) @ line) / max(np.hypot(line[0], line[1]), 1e-8)


def test_epipolar_distance_closed_form_for_a_sideways_camera() -> None:
    # K = I, R = I, t = (1, 0, 0): F = [t]_x, epipolar lines are the rows y = y1, so d = |y2 - y1|
    F = torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64).expand(2, 3, 3)
    x1 = torch.tensor([[[10.0, 5.0], [3.0, -2.0]], [[0.0, 0.0], [7.0, 7.0]]], dtype=torch.float64)
    x2 = torch.tensor([[[40.0, 6.5], [-9.0, -2.0]], [[1.0, -3.0], [7.0, 8.0]]], dtype=torch.float64)
    torch.testing.assert_close(epipolar_distance(x1, x2, F), (x2[..., 1] - x1[..., 1]).abs())
    with pytest.raises(LowlabelError, match="epipolar_distance"):
        epipolar_distance(x1, x2[:, :1], F)


@pytest.mark.parametrize(("b", "n"), [(1, 6), (3, 11)])
def test_epipolar_distance_against_loop(b: int, n: int) -> None:
    g = torch.Generator().manual_seed(b * n)
    x1, x2 = torch.rand(b, n, 2, generator=g, dtype=torch.float64) * 100, torch.rand(b, n, 2, generator=g,
                                                                                        dtype=torch.float64) * 100
    F = torch.randn(b, 3, 3, generator=g, dtype=torch.float64)
    ref = [[line_distance(x1[k, i].numpy(), x2[k, i].numpy(), F[k].numpy()) for i in range(n)] for k in range(b)]
    torch.testing.assert_close(epipolar_distance(x1, x2, F), torch.tensor(ref, dtype=torch.float64))


def test_std_weights_normalise_and_mask() -> None:
    std = torch.tensor([[1.0, 2.0], [4.0, 0.5]], requires_grad=True)
    w = std_weights(std)
    inv = np.array([1, 0.5, 0.25, 2])
    np.testing.assert_allclose(w.flatten().detach().numpy(), inv / inv.mean(), rtol=1e-6)
    assert not w.requires_grad
    mask = torch.tensor([[True, False], [True, True]])
    wm = std_weights(std, mask)
    ref = inv / inv.mean() * mask.flatten().numpy()
    np.testing.assert_allclose(wm.flatten().numpy(), ref / (ref.mean() + 1e-8), rtol=1e-6)
    assert std_weights(std, torch.zeros(2, 2, dtype=torch.bool)).abs().sum() == 0  # all masked: zeros, no NaN


def caps_reference(coord1, pred, F, size, ws=0.125, th_e=0.5, th_c=0.025, px=40.0):
    """Per-point loops of the official CtoFCriterion (std weighting on, w_std = 0), float64."""
    b, n = coord1.shape[:2]
    short, long_ = min(size), max(size)
    c1 = coord1.numpy()
    p = {k: v.detach().numpy() for k, v in pred.items()}

    def dist(key):
        return np.array([[line_distance(c1[k, i], p[key][k, i], F[k].numpy()) for i in range(n)] for k in range(b)])

    def weights(std, mask):
        inv = 1 / np.maximum(std, 1e-10)
        w = inv / inv.mean() * mask
        return w / (w.mean() + 1e-8)

    d_c, d_f = dist("coord2_ec"), dist("coord2_ef")
    e_c = (weights(p["std_c"], d_c < short * th_e) * d_c).mean() / long_
    e_f = (weights(p["std_f"], (d_f < short * th_e) & (d_c < short * ws)) * d_f).mean() / long_
    cyc = []
    for lv, d in (("c", d_c), ("f", d_f)):
        loop = np.linalg.norm(c1 - p[f"coord1_l{lv}"], axis=-1)
        loop = np.where(loop < px, loop, 0.0)
        cyc.append((weights(p[f"std_{lv}"] * p[f"std_l{lv}"], d < short * th_c) * loop).mean() / long_)
    return e_c + e_f + 0.1 * (cyc[0] + cyc[1]), e_c, e_f, cyc[0], cyc[1]


def random_prediction(b: int, n: int, seed: int, spread: float) -> tuple[torch.Tensor, dict, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coord1 = torch.rand(b, n, 2, generator=g, dtype=torch.float64) * torch.tensor([127.0, 95.0], dtype=torch.float64)
    F = torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64).repeat(b, 1, 1)
    F = F + 0.001 * torch.randn(b, 3, 3, generator=g, dtype=torch.float64)
    pred = {k: (coord1 + spread * torch.randn(b, n, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
            for k in ("coord2_ec", "coord2_ef", "coord1_lc", "coord1_lf")}
    for k in ("std_c", "std_f", "std_lc", "std_lf"):
        pred[k] = (0.05 + torch.rand(b, n, generator=g, dtype=torch.float64)).requires_grad_(True)
    return coord1, pred, F


@pytest.mark.parametrize(("b", "n", "spread"), [(1, 10, 3.0), (2, 25, 8.0), (3, 40, 30.0)])
def test_caps_loss_against_loop(b: int, n: int, spread: float) -> None:
    coord1, pred, F = random_prediction(b, n, b + n, spread)
    out = caps_loss(coord1, pred, F, (96, 128))
    ref = caps_reference(coord1, pred, F, (96, 128))
    for key, value in zip(("loss", "epipolar_coarse", "epipolar_fine", "cycle_coarse", "cycle_fine"), ref,
                          strict=True):
        assert out[key].item() == pytest.approx(value, rel=1e-9, abs=1e-12), key
    out["loss"].backward()
    assert pred["coord2_ef"].grad is not None and pred["std_c"].grad is None  # weights are detached


def test_caps_loss_is_zero_for_matches_on_their_lines_with_exact_loops() -> None:
    coord1, pred, F = random_prediction(2, 20, 0, 0.0)
    F = torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64).repeat(2, 1, 1)
    for key in ("coord2_ec", "coord2_ef"):
        pred[key] = coord1 + torch.tensor([12.0, 0.0], dtype=torch.float64)  # slid along the horizontal line
    out = caps_loss(coord1, pred, F, (96, 128))
    assert all(v.item() == pytest.approx(0.0, abs=1e-12) for v in out.values())


def contrastive_reference(f0, f1, pos, pos_margin=0.1, neg_margin=1.4):
    """Loops of FCGF's hardest-contrastive loss with every positive and every candidate used."""
    f0, f1 = f0.detach().double().numpy(), f1.detach().double().numpy()
    keys = {(int(i), int(j)) for i, j in pos}
    pos_terms, neg0, neg1 = [], [], []
    for i, j in pos:
        pos_terms.append(max(((f0[i] - f1[j]) ** 2).sum() - pos_margin, 0.0))
        d01 = [np.sqrt(((f0[i] - f1[k]) ** 2).sum() + 1e-7) for k in range(len(f1))]
        k = int(np.argmin(d01))
        if (int(i), k) not in keys:
            neg0.append(max(neg_margin - d01[k], 0.0) ** 2)
        d10 = [np.sqrt(((f1[j] - f0[k]) ** 2).sum() + 1e-7) for k in range(len(f0))]
        k = int(np.argmin(d10))
        if (k, int(j)) not in keys:
            neg1.append(max(neg_margin - d10[k], 0.0) ** 2)
    neg = ((np.mean(neg0) if neg0 else 0.0) + (np.mean(neg1) if neg1 else 0.0)) / 2
    return np.mean(pos_terms) + neg, np.mean(pos_terms), neg


@pytest.mark.parametrize(("n0", "n1", "dim"), [(8, 6, 4), (30, 25, 16)])
def test_hardest_contrastive_against_loop(n0: int, n1: int, dim: int) -> None:
    g = torch.Generator().manual_seed(n0)
    f0 = torch.nn.functional.normalize(torch.randn(n0, dim, generator=g), dim=1).requires_grad_(True)
    f1 = torch.nn.functional.normalize(torch.randn(n1, dim, generator=g), dim=1)
    pos = torch.stack([torch.randperm(n0, generator=g)[:5], torch.randperm(n1, generator=g)[:5]], 1)
    out = hardest_contrastive_loss(f0, f1, pos, generator=g)
    ref = contrastive_reference(f0, f1, pos.numpy())
    for key, value in zip(("loss", "positive", "negative"), ref, strict=True):
        assert out[key].item() == pytest.approx(value, rel=1e-5), key
    out["loss"].backward()
    assert f0.grad is not None and torch.isfinite(f0.grad).all()


def test_hardest_negative_that_is_a_positive_is_dropped() -> None:
    # f1[0] and f1[1] are the same descriptor, both positives of f0[0]: its hardest candidate is always a positive
    f0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    f1 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, -1.0]])
    pos = torch.tensor([[0, 0], [0, 1]])
    out = hardest_contrastive_loss(f0, f1, pos)
    ref = contrastive_reference(f0, f1, pos.numpy())
    assert out["negative"].item() == pytest.approx(ref[2], abs=1e-6)
    assert out["positive"].item() == 0.0  # identical descriptors, below the 0.1 margin
    # the f0 side drops both hardest candidates; the f1 side finds f0[0] (a positive) too: nothing left
    assert out["negative"].item() == 0.0


def test_hardest_contrastive_subsamples_from_the_generator() -> None:
    g = torch.Generator().manual_seed(3)
    f0, f1 = torch.randn(50, 8, generator=g), torch.randn(40, 8, generator=g)
    pos = torch.stack([torch.arange(30), torch.arange(30)], 1)
    out = hardest_contrastive_loss(f0, f1, pos, num_pos=10, num_hn_samples=12,
                                   generator=torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)  # the draws: candidates of f0, of f1, then the positives
    sel0, sel1 = torch.randperm(50, generator=replay)[:12], torch.randperm(40, generator=replay)[:12]
    chosen = pos[torch.randperm(30, generator=replay)[:10]]
    # reference on the drawn subsets: candidates re-indexed, the positive test against all 30 positives
    sub0, sub1 = f0[sel0], f1[sel1]
    keys = {(int(i), int(j)) for i, j in pos}
    neg0, neg1, pos_terms = [], [], []
    for i, j in chosen.tolist():
        pos_terms.append(max(((f0[i] - f1[j]) ** 2).sum().item() - 0.1, 0.0))
        d = ((f0[i] - sub1) ** 2).sum(1).add(1e-7).sqrt()
        k = int(d.argmin())
        if (i, int(sel1[k])) not in keys:
            neg0.append(max(1.4 - d[k].item(), 0.0) ** 2)
        d = ((f1[j] - sub0) ** 2).sum(1).add(1e-7).sqrt()
        k = int(d.argmin())
        if (int(sel0[k]), j) not in keys:
            neg1.append(max(1.4 - d[k].item(), 0.0) ** 2)
    expected = np.mean(pos_terms) + (np.mean(neg0) + np.mean(neg1)) / 2
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(LowlabelError, match="no positive pairs"):
        hardest_contrastive_loss(f0, f1, torch.zeros(0, 2, dtype=torch.long))
