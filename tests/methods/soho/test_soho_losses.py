"""SOHO losses against per-row Python references and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.soho.losses import itm_loss, mlm_loss, mvm_loss, vqa_loss, vqa_score


def ce_row(logits: list[float], label: int) -> float:
    top = max(logits)
    return -(logits[label] - top - math.log(sum(math.exp(v - top) for v in logits)))


def masked_ce_reference(logits: torch.Tensor, labels: torch.Tensor) -> float:
    rows, labs = logits.reshape(-1, logits.shape[-1]).tolist(), labels.reshape(-1).tolist()
    total = sum(ce_row(r, lab) for r, lab in zip(rows, labs, strict=True) if lab != -100)
    return total / (sum(lab != -100 for lab in labs) + 1e-6)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / max(math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)), 1e-300)


@pytest.mark.parametrize(("b", "length", "vocab"), [(2, 5, 7), (4, 16, 50), (1, 3, 2)])
def test_mlm_matches_the_reference(b: int, length: int, vocab: int) -> None:
    g = torch.Generator().manual_seed(b * length)
    pred = torch.randn(b, length, vocab, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(vocab, (b, length), generator=g)
    labels[torch.rand(b, length, generator=g) < 0.6] = -100
    labels[0, 0] = 1  # at least one label
    assert mlm_loss(pred, labels).item() == pytest.approx(masked_ce_reference(pred, labels), rel=1e-6)
    keep = labels >= 0  # passing only the labelled rows gives the same value
    assert mlm_loss(pred[keep], labels[keep]).item() == pytest.approx(mlm_loss(pred, labels).item(), rel=1e-6)


def test_masked_losses_are_zero_without_labels() -> None:
    pred = torch.randn(3, 4, 10, requires_grad=True)
    labels = torch.full((3, 4), -100)
    loss = mlm_loss(pred, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    assert mvm_loss(torch.randn(3, 4, 6), torch.randn(9, 6), labels).item() == 0.0


def test_mlm_single_label_is_that_rows_cross_entropy_up_to_the_eps() -> None:
    pred = torch.tensor([[2.0, 0.0, -1.0], [5.0, 5.0, 5.0]])
    labels = torch.tensor([-100, 2])
    assert mlm_loss(pred, labels).item() == pytest.approx(math.log(3) / (1 + 1e-6), rel=1e-6)


@pytest.mark.parametrize(("n", "k", "d"), [(6, 5, 3), (20, 64, 8)])
def test_mvm_is_cross_entropy_of_cosines_without_temperature(n: int, k: int, d: int) -> None:
    g = torch.Generator().manual_seed(n + k)
    out = torch.randn(n, d, generator=g, dtype=torch.float64)
    codes = torch.randn(k, d, generator=g, dtype=torch.float64) * 4
    labels = torch.randint(k, (n,), generator=g)
    labels[::3] = -100
    logits = [[cosine(o, e) for e in codes.tolist()] for o in out.tolist()]
    expected = sum(ce_row(r, lab) for r, lab in zip(logits, labels.tolist(), strict=True) if lab != -100)
    expected /= int((labels != -100).sum()) + 1e-6
    # rel 1e-7: the count + 1e-6 denominator is a float32 value, as officially
    assert mvm_loss(out, codes, labels).item() == pytest.approx(expected, rel=1e-7)
    assert mvm_loss(out.view(2, n // 2, d), codes, labels.view(2, n // 2)).item() == pytest.approx(expected, rel=1e-7)


def test_mvm_closed_forms() -> None:
    k = 8
    codes = torch.eye(k, 10)  # unit codes on the first k axes
    orthogonal = torch.zeros(1, 10)
    orthogonal[0, 9] = 3.0  # cosine 0 to every code: uniform softmax, loss ln K
    assert mvm_loss(orthogonal, codes, torch.tensor([2])).item() == pytest.approx(math.log(k) / (1 + 1e-6), rel=1e-6)
    on_code = 5 * codes[2:3]  # cosine 1 to its code, 0 to the rest: ln(e + K - 1) - 1, the no-temperature floor
    expected = (math.log(math.e + k - 1) - 1) / (1 + 1e-6)
    assert mvm_loss(on_code, codes, torch.tensor([2])).item() == pytest.approx(expected, rel=1e-6)


def test_mvm_gives_no_gradient_to_the_dictionary() -> None:
    codes = torch.randn(5, 4, requires_grad=True)
    out = torch.randn(3, 4, requires_grad=True)
    mvm_loss(out, codes, torch.tensor([0, 4, -100])).backward()
    assert codes.grad is None and out.grad.abs().sum() > 0


def test_itm_is_per_pair() -> None:
    pred = torch.tensor([[0.5, -1.0], [2.0, 1.0], [0.0, 0.0]])
    labels = torch.tensor([1, 0, 1])
    expected = [ce_row(r, lab) for r, lab in zip(pred.tolist(), labels.tolist(), strict=True)]
    assert itm_loss(pred, labels).tolist() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(LowlabelError, match=r"\(B, 2\)"):
        itm_loss(torch.zeros(3, 3), labels)


@pytest.mark.parametrize(("b", "a"), [(1, 3), (4, 10), (7, 129)])
def test_vqa_loss_is_summed_bce_over_answers_per_question(b: int, a: int) -> None:
    g = torch.Generator().manual_seed(a)
    pred = torch.randn(b, a, generator=g, dtype=torch.float64) * 2
    soft = torch.where(torch.rand(b, a, generator=g) < 0.2, torch.rand(b, a, generator=g), torch.zeros(b, a)).double()

    def bce(z: float, y: float) -> float:
        return -(y * math.log(1 / (1 + math.exp(-z))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-z))))

    expected = sum(bce(z, y) for zr, yr in zip(pred.tolist(), soft.tolist(), strict=True)
                   for z, y in zip(zr, yr, strict=True)) / b
    assert vqa_loss(pred, soft).item() == pytest.approx(expected, rel=1e-6)


def test_vqa_score_is_the_soft_label_of_the_argmax() -> None:
    pred = torch.tensor([[0.1, 3.0, -1.0], [2.0, 2.0, 0.0], [-5.0, -6.0, -4.0]])
    soft = torch.tensor([[0.0, 0.9, 0.3], [0.6, 1.0, 0.0], [1.0, 0.0, 0.3]])
    assert vqa_score(pred, soft).tolist() == pytest.approx([0.9, 0.6, 0.3])  # tie -> lowest index
    with pytest.raises(LowlabelError, match="same shape"):
        vqa_score(pred, soft[:, :2])
    with pytest.raises(LowlabelError, match="same shape"):
        vqa_loss(pred, soft[:2])


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(LowlabelError, match="score rows"):
        mlm_loss(torch.zeros(4, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(LowlabelError, match="channels"):
        mvm_loss(torch.zeros(4, 5), torch.zeros(3, 6), torch.zeros(4, dtype=torch.long))
