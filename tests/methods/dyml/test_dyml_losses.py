"""CSL loss against a value worked out by hand, a brute-force loop over samples and proxies, and edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.dyml.losses import csl_loss, proxy_hierarchy

MARGINS = (0.25, 0.35, 0.45)
# fine class -> (middle, coarse): 0 and 1 share middle 0; 2 is in middle 1; 3 in middle 2 and coarse 1
TREE = {0: (0, 0), 1: (0, 0), 2: (1, 0), 3: (2, 1)}


def brute_force(emb: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, tree: dict[int, tuple[int, ...]],
                margins: tuple[float, ...], scale: float) -> float:
    """Σ_l mean_i log(1 + Σ_{c: Y(c)^l != y_i^l} exp(γ (s_ic - s_i+ + m_l))), with plain Python loops."""
    total = 0.0
    for level, margin in enumerate(margins):
        terms = []
        for i in range(emb.shape[0]):
            e = [float(v) for v in emb[i]]
            ne = math.sqrt(sum(v * v for v in e))
            sims = []
            for c in range(proxies.shape[0]):
                p = [float(v) for v in proxies[c]]
                npc = math.sqrt(sum(v * v for v in p))
                sims.append(sum(a * b for a, b in zip(e, p, strict=True)) / (ne * npc))
            y = [int(v) for v in labels[i]]
            pos = sims[y[0]]
            acc = 0.0
            for c in range(proxies.shape[0]):
                label_c = (c, *tree[c])[level]
                if label_c != y[level]:
                    acc += math.exp(scale * (sims[c] - pos + margin))
            terms.append(math.log1p(acc))
        total += sum(terms) / len(terms)
    return total


def table(tree: dict[int, tuple[int, ...]]) -> torch.Tensor:
    return torch.tensor([(c, *parents) for c, parents in sorted(tree.items())])


def test_hand_computed_two_samples() -> None:
    # unit-circle geometry: every cosine is 1, 0 or -1; proxy 3 and sample 2 are deliberately not unit length
    proxies = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -2.0]], dtype=torch.float64)
    emb = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([[0, 0, 0], [1, 0, 0]])
    # sample 1: s = (1, 0, -1, 0), positive 1. fine negatives {1,2,3}, middle {2,3}, coarse {3}
    a_fine = math.log(1 + 2 * math.exp(-0.75) + math.exp(-1.75))
    a_mid = math.log(1 + math.exp(-1.65) + math.exp(-0.65))
    a_coarse = math.log(1 + math.exp(-0.55))
    # sample 2: s = (0, 1, 0, -1), positive 1. fine negatives {0,2,3}, middle {2,3}, coarse {3}
    b_fine = math.log(1 + 2 * math.exp(-0.75) + math.exp(-1.75))
    b_mid = math.log(1 + math.exp(-0.65) + math.exp(-1.65))
    b_coarse = math.log(1 + math.exp(-1.55))
    expected = (a_fine + b_fine) / 2 + (a_mid + b_mid) / 2 + (a_coarse + b_coarse) / 2
    got = csl_loss(emb, labels, proxies, table(TREE), margins=MARGINS, scale=1.0)
    assert got.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("n", "d", "scale"), [(1, 2, 1.0), (6, 5, 32.0), (17, 16, 8.0)])
def test_matches_brute_force_loop(n: int, d: int, scale: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    tree = {0: (0, 0), 1: (0, 0), 2: (1, 0), 3: (1, 0), 4: (2, 1), 5: (3, 1), 6: (3, 1)}
    proxies = torch.randn(7, d, generator=g, dtype=torch.float64)
    emb = torch.randn(n, d, generator=g, dtype=torch.float64)
    fine = torch.randint(0, 7, (n,), generator=g)
    labels = table(tree)[fine]
    expected = brute_force(emb, labels, proxies, tree, MARGINS, scale)
    # the whole training table (repeated, shuffled rows) gives the same hierarchy as its unique rows
    train = table(tree).repeat(3, 1)[torch.randperm(21, generator=g)]
    got = csl_loss(emb, labels, proxies, train, margins=MARGINS, scale=scale)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    got32 = csl_loss(emb.float(), labels, proxies.float(), train, margins=MARGINS, scale=scale)
    assert got32.dtype == torch.float32 and got32.item() == pytest.approx(expected, rel=2e-4)


def test_level_without_negatives_adds_zero_and_keeps_gradients_finite() -> None:
    # one coarse class only: the coarse term is empty for every sample
    tree = {0: (0, 0), 1: (1, 0), 2: (1, 0)}
    g = torch.Generator().manual_seed(0)
    proxies = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = table(tree)[torch.tensor([0, 1, 2, 0, 1])]
    loss = csl_loss(emb, labels, proxies, table(tree), margins=MARGINS, scale=16.0)
    assert loss.item() == pytest.approx(brute_force(emb.detach(), labels, proxies.detach(), tree, MARGINS, 16.0),
                                        rel=1e-10)
    loss.backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(proxies.grad).all()
    assert proxies.grad.abs().sum() > 0


def test_each_term_grows_with_its_margin() -> None:
    g = torch.Generator().manual_seed(1)
    proxies, emb = torch.randn(4, 3, generator=g), torch.randn(8, 3, generator=g)
    labels = table(TREE)[torch.randint(0, 4, (8,), generator=g)]
    base = csl_loss(emb, labels, proxies, table(TREE), margins=(0.1, 0.1, 0.1))
    for level in range(3):
        bigger = [0.1, 0.1, 0.1]
        bigger[level] = 0.5
        assert csl_loss(emb, labels, proxies, table(TREE), margins=tuple(bigger)) > base


def test_gradient_pulls_towards_own_proxy() -> None:
    proxies = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    emb = torch.tensor([[0.6, 0.8]], requires_grad=True)  # between own proxy 0 and negative proxy 1
    csl_loss(emb, torch.tensor([[0, 0, 0]]), proxies, table(TREE)).backward()
    step = -emb.grad[0]
    assert step[0] > 0 and step[1] < 0


def test_bad_inputs_name_the_problem() -> None:
    proxies, emb = torch.randn(4, 3), torch.randn(2, 3)
    labels = torch.tensor([[0, 0, 0], [3, 2, 1]])
    with pytest.raises(LowlabelError, match="one column per margin"):
        csl_loss(emb, labels[:, :2], proxies, table(TREE))
    with pytest.raises(LowlabelError, match=r"\(N, D\) and \(P, D\)"):
        csl_loss(emb, labels, torch.randn(4, 5), table(TREE))
    with pytest.raises(LowlabelError, match=r"0\.\.3"):
        csl_loss(emb, torch.tensor([[0, 0, 0], [4, 2, 1]]), proxies, table(TREE))
    with pytest.raises(LowlabelError, match="fine class 3 has a proxy but no row"):
        csl_loss(emb, labels, proxies, table(TREE)[:3])
    clash = torch.cat([table(TREE), torch.tensor([[1, 1, 0]])])
    with pytest.raises(LowlabelError, match="fine class 1 has more than one"):
        proxy_hierarchy(clash, 4)
    with pytest.raises(LowlabelError, match="remap fine labels"):
        proxy_hierarchy(table(TREE) + 1, 4)
