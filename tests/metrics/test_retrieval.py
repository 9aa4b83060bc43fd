"""Retrieval metrics against hand-worked values, sklearn, and brute-force loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, ndcg_score

from lowlabel.errors import LowlabelError
from lowlabel.metrics.retrieval import (
    average_precision,
    mean_average_precision,
    ndcg_at_k,
    recall_at_k,
    triplet_agreement,
)

L3 = math.log2(3)


def test_ndcg_hand_worked_both_discounts():
    # ranking by score: items 0, 1, 2, 3 -> gains 0, 3, 1, 2; ideal order 3, 2, 1, 0
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    rel = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    irsgs = (0 / 1 + 3 / 1 + 1 / L3) / (3 / 1 + 2 / 1 + 1 / L3)  # d = 1, log2(2) = 1, log2(3)
    standard = (0 / 1 + 3 / L3 + 1 / 2) / (3 / 1 + 2 / L3 + 1 / 2)  # d = log2(2), log2(3), log2(4)
    assert ndcg_at_k(scores, rel, 3, "irsgs").item() == pytest.approx(irsgs, abs=1e-12)
    assert ndcg_at_k(scores, rel, 3, "standard").item() == pytest.approx(standard, abs=1e-12)
    assert irsgs == pytest.approx(0.644819, abs=1e-6) and standard == pytest.approx(0.502491, abs=1e-6)


def test_ndcg_clamps_negative_relevance_and_zero_ideal():
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    rel = torch.tensor([[1.0, -5.0, 0.0], [-1.0, -2.0, 0.0]])
    out = ndcg_at_k(scores, rel, 2)
    # row 0: top-2 by score = items 1 (gain 0 after clamp), 2 (gain 0); ideal gain 1 at rank 1
    assert out[0].item() == pytest.approx(0.0)
    assert out[1].item() == 0.0  # IDCG = 0 -> 0, not NaN
    perfect = ndcg_at_k(rel[:1], rel[:1], 3)
    assert perfect.item() == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_ndcg_standard_matches_sklearn(k):
    gen = torch.Generator().manual_seed(k)
    scores = torch.rand(7, 12, generator=gen)
    rel = torch.rand(7, 12, generator=gen) * 3
    ours = ndcg_at_k(scores, rel, k, "standard")
    ref = [ndcg_score(rel[q : q + 1].numpy(), scores[q : q + 1].numpy(), k=k) for q in range(7)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10)


def test_ndcg_batched_equals_rows_and_valid_mask():
    gen = torch.Generator().manual_seed(0)
    scores, rel = torch.randn(5, 9, generator=gen), torch.rand(5, 9, generator=gen)
    full = ndcg_at_k(scores, rel, 4)
    rows = torch.cat([ndcg_at_k(scores[q : q + 1], rel[q : q + 1], 4) for q in range(5)])
    torch.testing.assert_close(full, rows)
    valid = torch.ones(5, 9, dtype=torch.bool)
    valid[:, 0] = False  # dropping a candidate = computing on the others
    torch.testing.assert_close(ndcg_at_k(scores, rel, 4, valid=valid), ndcg_at_k(scores[:, 1:], rel[:, 1:], 4))
    with pytest.raises(LowlabelError, match="discount"):
        ndcg_at_k(scores, rel, 4, discount="log")


def test_triplet_agreement_hand_worked():
    sim1 = torch.tensor([0.9, 0.1, 0.5, -math.inf, 0.2])
    sim2 = torch.tensor([0.2, 0.3, 0.5, -math.inf, 0.1])
    votes = torch.tensor(
        [
            [3, 1, 0, 0],  # chooses 1: 3/4
            [1, 2, 2, 1],  # chooses 2: (2 + 1)/6
            [4, 0, 0, 0],  # tie -> chooses 2: 0/4
            [0, 3, 1, 0],  # both missing -> fallback 0.1 < 0.7 chooses 2: (3 + 0.5)/4
            [1, 0, 3, 0],  # o1 + o2 = 1 < 2: skipped
        ]
    )
    fallback = (torch.tensor([0.0, 0.0, 0.0, 0.1, 0.0]), torch.tensor([0.0, 0.0, 0.0, 0.7, 0.0]))
    expected = (3 / 4 + 3 / 6 + 0 / 4 + 3.5 / 4) / 4
    assert triplet_agreement(sim1, sim2, votes, fallback=fallback) == pytest.approx(expected)
    # without the fallback the -inf tie chooses target 2 as well; the skipped row never counts
    assert triplet_agreement(sim1, sim2, votes) == pytest.approx(expected)
    with pytest.raises(LowlabelError, match="decisive"):
        triplet_agreement(sim1[4:], sim2[4:], votes[4:])


def test_recall_at_k_and_map_against_references():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(6, 15, generator=gen)
    relevant = torch.rand(6, 15, generator=gen) < 0.25
    relevant[0] = False
    relevant[1, 4] = True
    for k in (1, 3, 15):
        loop = [float(relevant[q, scores[q].argsort(descending=True)[:k]].any()) for q in range(6)]
        np.testing.assert_allclose(recall_at_k(scores, relevant, k).numpy(), loop)
    ap = average_precision(scores, relevant)
    assert torch.isnan(ap[0])
    ref = [average_precision_score(relevant[q].numpy(), scores[q].numpy()) for q in range(1, 6)]
    np.testing.assert_allclose(ap[1:].numpy(), ref, atol=1e-12)
    assert mean_average_precision(scores, relevant) == pytest.approx(float(np.mean(ref)))
    # hand-worked: ranking hits 1, 0, 1 -> AP = (1/1 + 2/3) / 2
    one = average_precision(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[True, False, True]]))
    assert one.item() == pytest.approx((1 + 2 / 3) / 2)
