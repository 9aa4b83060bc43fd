"""FDRL losses against hand-computed values, per-image loops and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.fdrl.losses import (
    balance_loss,
    compactness_loss,
    distribution_loss,
    fdrl_loss,
    normalise_weights,
)


def test_compactness_hand_value() -> None:
    latent = torch.tensor([[[1.0, 2.0], [0.0, 1.0]], [[3.0, 0.0], [2.0, 2.0]]])
    centres = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # image 0: |(0,1)|² + |(-1,1)|² = 1 + 2 = 3; image 1: |(2,-1)|² + |(1,2)|² = 5 + 5 = 10; mean 6.5
    assert compactness_loss(latent, centres).item() == pytest.approx(6.5)


@pytest.mark.parametrize(("n", "m", "d"), [(1, 1, 1), (4, 9, 16), (7, 3, 5)])
def test_compactness_matches_loop(n: int, m: int, d: int) -> None:
    g = torch.Generator().manual_seed(n * 100 + m)
    latent = torch.randn(n, m, d, generator=g, dtype=torch.float64)
    centres = torch.randn(m, d, generator=g, dtype=torch.float64)
    ref = sum(sum((latent[i, j, k] - centres[j, k]).item() ** 2 for j in range(m) for k in range(d))
              for i in range(n)) / n
    assert compactness_loss(latent, centres).item() == pytest.approx(ref, rel=1e-12)
    assert compactness_loss(centres.expand(n, m, d), centres).item() == 0.0


def test_balance_hand_values() -> None:
    w = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]])
    # batch mean (0.3, 0.3, 0.4); L1 distance to (1/3, 1/3, 1/3) = 1/30 + 1/30 + 2/30
    assert balance_loss(w).item() == pytest.approx(4 / 30)
    raw = torch.tensor([[2.0, 1.0], [4.0, 3.0]])
    # literal form on raw weights: mean (3, 2), |3 - 1/2| + |2 - 1/2| = 4
    assert balance_loss(raw).item() == pytest.approx(4.0)


@pytest.mark.parametrize("m", [2, 5, 9])
def test_balance_minimal_at_balanced_weights(m: int) -> None:
    g = torch.Generator().manual_seed(m)
    balanced = torch.full((6, m), 1.0 / m, dtype=torch.float64)
    assert balance_loss(balanced).item() == pytest.approx(0.0, abs=1e-15)
    for _ in range(20):
        w = normalise_weights(torch.rand(6, m, generator=g, dtype=torch.float64) + 0.01)
        assert balance_loss(w).item() > 0.0
        # unbalanced rows whose batch mean is uniform are balanced too (the loss sees only the mean)
        rolled = torch.cat([w.roll(k, dims=1) for k in range(m)])
        assert balance_loss(rolled).item() == pytest.approx(0.0, abs=1e-12)
    # the worst normalised case, all weight on one branch: 2(M-1)/M
    one_hot = torch.zeros(3, m, dtype=torch.float64)
    one_hot[:, 0] = 1.0
    assert balance_loss(one_hot).item() == pytest.approx(2 * (m - 1) / m)
    # equal raw alphas of any scale become uniform once normalised
    assert balance_loss(normalise_weights(torch.full((4, m), 37.0))).item() == pytest.approx(0.0, abs=1e-6)


def test_distribution_hand_value() -> None:
    w = torch.tensor([[1.0, 2.0], [3.0, 1.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1, 0])
    centres = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    # |(0,1)|² = 1, |(1,-1)|² = 2, |(-1,-1)|² = 2; mean 5/3
    assert distribution_loss(w, labels, centres).item() == pytest.approx(5 / 3)


@pytest.mark.parametrize(("n", "m", "c"), [(1, 1, 1), (8, 9, 7), (5, 4, 3)])
def test_distribution_matches_loop(n: int, m: int, c: int) -> None:
    g = torch.Generator().manual_seed(n + 10 * c)
    w = torch.rand(n, m, generator=g, dtype=torch.float64) * 50
    labels = torch.randint(0, c, (n,), generator=g)
    centres = torch.randn(c, m, generator=g, dtype=torch.float64)
    ref = sum(sum((w[i, j] - centres[labels[i], j]).item() ** 2 for j in range(m)) for i in range(n)) / n
    assert distribution_loss(w, labels, centres).item() == pytest.approx(ref, rel=1e-12)


def test_total_is_the_weighted_sum_of_the_terms() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    labels = torch.tensor([0, 2])
    latent = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [3.0, 0.0]]])
    alphas = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    lat_c = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    cls_c = torch.tensor([[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]])
    ce = (-(2.0 - math.log(math.exp(2.0) + 1 + math.exp(-1.0))) - (1.0 - math.log(2 * math.exp(0.5) + math.e))) / 2
    compact = ((1 + 0) + (1 + 1) + (1 + 1) + (4 + 1)) / 2  # 5
    bal_norm = abs(0.375 - 0.5) + abs(0.625 - 0.5)  # normalised rows (.25, .75), (.5, .5)
    bal_raw = abs(1.5 - 0.5) + abs(2.5 - 0.5)
    dist = ((0 + 4) + (0 + 0)) / 2
    out = fdrl_loss(logits, labels, latent, alphas, lat_c, cls_c, lambda_c=0.1, lambda_b=2.0, lambda_d=0.5)
    assert out["cls"].item() == pytest.approx(ce, rel=1e-6)
    assert out["compactness"].item() == pytest.approx(compact)
    assert out["balance"].item() == pytest.approx(bal_norm)
    assert out["distribution"].item() == pytest.approx(dist)
    assert out["total"].item() == pytest.approx(ce + 0.1 * compact + 2.0 * bal_norm + 0.5 * dist, rel=1e-6)
    raw = fdrl_loss(logits, labels, latent, alphas, lat_c, cls_c, balance="raw")
    assert raw["balance"].item() == pytest.approx(bal_raw)
    assert raw["total"].item() == pytest.approx(ce + 1e-4 * compact + bal_raw + 1e-4 * dist, rel=1e-6)


def test_bad_inputs_raise() -> None:
    with pytest.raises(LowlabelError, match="compactness_loss"):
        compactness_loss(torch.zeros(2, 3, 4), torch.zeros(3, 5))
    with pytest.raises(LowlabelError, match="balance_loss"):
        balance_loss(torch.zeros(2, 3, 4))
    with pytest.raises(LowlabelError, match="class centres"):
        distribution_loss(torch.zeros(2, 3), torch.tensor([0, 4]), torch.zeros(4, 3))
    with pytest.raises(LowlabelError, match="distribution_loss needs"):
        distribution_loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(4, 2))
    with pytest.raises(LowlabelError, match="balance-loss mode"):
        fdrl_loss(torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 2, 2), torch.ones(1, 2), torch.zeros(2, 2),
                  torch.zeros(2, 2), balance="uniform")
