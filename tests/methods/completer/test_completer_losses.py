"""COMPLETER losses against a brute-force double loop and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.completer.losses import EPS, cross_view_contrastive, dual_prediction, reconstruction


def brute_force(z1: np.ndarray, z2: np.ndarray, alpha: float) -> float:
    """Double-loop reference of the official formula, in float64 Python scalars."""
    b, k = z1.shape
    joint = [[sum(z1[n, i] * z2[n, j] for n in range(b)) for j in range(k)] for i in range(k)]
    joint = [[(joint[i][j] + joint[j][i]) / 2 for j in range(k)] for i in range(k)]
    total = sum(map(sum, joint))
    joint = [[joint[i][j] / total for j in range(k)] for i in range(k)]
    rows = [sum(joint[i]) for i in range(k)]
    cols = [sum(joint[i][j] for i in range(k)) for j in range(k)]
    loss = 0.0
    for i in range(k):
        for j in range(k):
            p, pi, pj = max(joint[i][j], EPS), max(rows[i], EPS), max(cols[j], EPS)
            loss -= p * (math.log(p) - (alpha + 1) * math.log(pj) - (alpha + 1) * math.log(pi))
    return loss


def simplex(b: int, k: int, seed: int, sharp: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharp * torch.randn(b, k, generator=g, dtype=torch.float64), dim=1)


@pytest.mark.parametrize(("b", "k", "alpha"), [(5, 3, 9.0), (16, 7, 0.0), (9, 4, 2.5)])
def test_contrastive_matches_double_loop(b: int, k: int, alpha: float) -> None:
    z1, z2 = simplex(b, k, 0), simplex(b, k, 1)
    expected = brute_force(z1.numpy(), z2.numpy(), alpha)
    assert cross_view_contrastive(z1, z2, alpha=alpha).item() == pytest.approx(expected, rel=1e-10)
    got32 = cross_view_contrastive(z1.float(), z2.float(), alpha=alpha).item()
    assert got32 == pytest.approx(expected, rel=1e-4)


def test_contrastive_clamps_zero_probabilities_like_the_reference() -> None:
    # one-hot latents on 2 of 4 classes: most joint entries and two marginals are exactly 0 -> clamped to EPS
    z = torch.zeros(6, 4, dtype=torch.float64)
    z[:3, 0] = 1
    z[3:, 1] = 1
    z1 = z.clone().requires_grad_(True)
    loss = cross_view_contrastive(z1, z, alpha=9.0)
    assert loss.item() == pytest.approx(brute_force(z.numpy(), z.numpy(), 9.0), rel=1e-12)
    loss.backward()
    assert torch.isfinite(z1.grad).all()


def test_contrastive_is_symmetric() -> None:
    z1, z2 = simplex(11, 5, 3, sharp=3.0), simplex(11, 5, 4)
    assert cross_view_contrastive(z1, z2).item() == pytest.approx(cross_view_contrastive(z2, z1).item(), rel=1e-12)


def test_identical_one_hot_views_closed_form() -> None:
    # z1 = z2 one-hot with class frequencies pi: P = diag(pi), L = -(2 alpha + 1) H(pi) (+ O(EPS) off-diagonal)
    counts = torch.tensor([1, 2, 3, 4])
    z = torch.nn.functional.one_hot(torch.repeat_interleave(torch.arange(4), counts), 4).double()
    pi = counts.double() / counts.sum()
    entropy = -(pi * pi.log()).sum().item()
    for alpha in (0.0, 9.0):
        assert cross_view_contrastive(z, z, alpha=alpha).item() == pytest.approx(-(2 * alpha + 1) * entropy,
                                                                                 abs=1e-12)


def test_independent_views_closed_form() -> None:
    # every row the same distribution a in both views: P = a a^T, I = 0, so L = -alpha (H + H) = -2 alpha H(a)
    a = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    z = a.repeat(7, 1)
    entropy = -(a * a.log()).sum().item()
    assert cross_view_contrastive(z, z, alpha=9.0).item() == pytest.approx(-18 * entropy, rel=1e-12)
    # all K^2 one-hot combinations equally often: P uniform, L = -2 alpha ln K
    k = 3
    i, j = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    z1 = torch.nn.functional.one_hot(i.reshape(-1), k).double()
    z2 = torch.nn.functional.one_hot(j.reshape(-1), k).double()
    assert cross_view_contrastive(z1, z2, alpha=4.0).item() == pytest.approx(-8 * math.log(k), rel=1e-12)


def test_alpha_zero_is_minus_mutual_information_and_prefers_dependent_views() -> None:
    z1 = simplex(64, 6, 5, sharp=4.0)
    noisy = torch.softmax(z1.log() + 0.3 * torch.randn(64, 6, generator=torch.Generator().manual_seed(9),
                                                       dtype=torch.float64), dim=1)
    joint = (z1.t() @ noisy + noisy.t() @ z1).numpy() / 2
    joint /= joint.sum()
    p = joint.sum(axis=1)
    mi = float((joint * np.log(joint / np.outer(p, p))).sum())
    assert cross_view_contrastive(z1, noisy, alpha=0.0).item() == pytest.approx(-mi, rel=1e-10)
    assert cross_view_contrastive(z1, noisy, alpha=0.0) < cross_view_contrastive(z1, simplex(64, 6, 6), alpha=0.0)


def test_contrastive_rejects_mismatched_shapes() -> None:
    with pytest.raises(LowlabelError):
        cross_view_contrastive(simplex(4, 3, 0), simplex(5, 3, 0))


def test_dual_prediction_and_reconstruction_are_element_means() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2, p21, p12 = (torch.rand(5, 3, generator=g) for _ in range(4))
    expected = ((p21 - z2) ** 2).sum() / 15 + ((p12 - z1) ** 2).sum() / 15
    assert dual_prediction(z1, z2, p21, p12).item() == pytest.approx(expected.item(), rel=1e-6)
    xs = [torch.rand(4, 2, generator=g), torch.rand(4, 6, generator=g)]
    hats = [torch.rand(4, 2, generator=g), torch.rand(4, 6, generator=g)]
    expected = sum(((h - x) ** 2).sum() / x.numel() for h, x in zip(hats, xs, strict=True))
    assert reconstruction(hats, xs).item() == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(LowlabelError):
        reconstruction(hats[:1], xs)
