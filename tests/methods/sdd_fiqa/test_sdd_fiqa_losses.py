"""SDD-FIQA pseudo-labels and W1: against scipy, a slow per-image loop, an exact case, and symmetries."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.sdd_fiqa.losses import (
    floyd_sample,
    huber_regression_loss,
    intra_class_labels,
    minmax_100,
    sample_pairs,
    sdd_pseudo_labels,
    wasserstein_1d,
)


def _data(n_ids: int, per_id: list[int] | int, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sizes = [per_id] * n_ids if isinstance(per_id, int) else per_id
    labels = torch.cat([torch.full((s,), 100 + 7 * k) for k, s in enumerate(sizes)])  # non-contiguous ids
    centres = torch.randn(len(sizes), d, generator=gen, dtype=torch.float64)
    emb = centres.repeat_interleave(torch.tensor(sizes), 0) + 0.8 * torch.randn(len(labels), d, generator=gen,
                                                                               dtype=torch.float64)
    perm = torch.randperm(len(labels), generator=gen)
    return emb[perm], labels[perm]


@pytest.mark.parametrize("m,n", [(7, 7), (24, 24), (5, 24), (24, 13)])
def test_wasserstein_matches_scipy(m: int, n: int) -> None:
    gen = torch.Generator().manual_seed(m * 100 + n)
    u = torch.randn(6, m, generator=gen, dtype=torch.float64)
    v = 0.5 * torch.randn(6, n, generator=gen, dtype=torch.float64) + 0.3
    ref = [scipy.stats.wasserstein_distance(u[i].numpy(), v[i].numpy()) for i in range(6)]
    assert torch.allclose(wasserstein_1d(u, v), torch.tensor(ref, dtype=torch.float64), atol=1e-12)


def test_wasserstein_ragged_counts_match_scipy() -> None:
    gen = torch.Generator().manual_seed(3)
    u, v = torch.randn(5, 9, generator=gen, dtype=torch.float64), torch.randn(5, 6, generator=gen, dtype=torch.float64)
    uc, vc = torch.tensor([1, 3, 9, 5, 2]), torch.tensor([6, 1, 4, 6, 2])
    got = wasserstein_1d(u, v, u_count=uc, v_count=vc)
    ref = [scipy.stats.wasserstein_distance(u[i, : uc[i]].numpy(), v[i, : vc[i]].numpy()) for i in range(5)]
    assert torch.allclose(got, torch.tensor(ref, dtype=torch.float64), atol=1e-12)
    with pytest.raises(LowlabelError, match="counts"):
        wasserstein_1d(u, v, u_count=torch.zeros(5, dtype=torch.long))


def test_wasserstein_disjoint_sets_is_mean_difference() -> None:
    u = torch.tensor([[0.9, 0.7, 0.8]])
    v = torch.tensor([[0.1, -0.2, 0.0, 0.3]])
    assert torch.allclose(wasserstein_1d(u, v), u.mean() - v.mean())


def test_floyd_gives_distinct_uniform_subsets() -> None:
    gen = torch.Generator().manual_seed(0)
    m = torch.full((20000,), 6)
    picks = floyd_sample(m, torch.full((20000,), 2), 3, gen)
    assert (picks[:, 2] == -1).all()
    assert (picks[:, 0] != picks[:, 1]).all() and picks[:, :2].min() >= 0 and picks[:, :2].max() < 6
    freq = torch.bincount(picks[:, :2].reshape(-1), minlength=6).double() / 40000
    assert torch.allclose(freq, torch.full((6,), 1 / 6, dtype=torch.float64), atol=0.01)


def _slow_labels(emb: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> np.ndarray:
    """The obviously-correct per-image loop of the spec on given draws (scipy W1, min-max, mean)."""
    f = torch.nn.functional.normalize(emb, dim=1).numpy()
    reps, n = pos.shape[:2]
    d = np.zeros((reps, n))
    for r in range(reps):
        for i in range(n):
            p = [f[i] @ f[j] for j in pos[r, i].tolist() if j >= 0]
            q = [f[i] @ f[j] for j in neg[r, i].tolist()]
            d[r, i] = scipy.stats.wasserstein_distance(p, q)
    q = 100 * (d - d.min(1, keepdims=True)) / (d.max(1, keepdims=True) - d.min(1, keepdims=True))
    return q.mean(0)


@pytest.mark.parametrize("pool_size", [128, 0])
def test_labels_match_slow_loop_with_same_draws(pool_size: int) -> None:
    emb, labels = _data(9, [3, 30, 12, 25, 26, 2, 8, 40, 14])
    kw = dict(n_pos=24, n_neg=24, repeats=4, seed=5, pool_size=pool_size, chunk_size=64)
    pos, neg = sample_pairs(emb, labels, **kw)
    got = sdd_pseudo_labels(emb, labels, **kw)
    np.testing.assert_allclose(got.numpy(), _slow_labels(emb, pos, neg), atol=1e-9)


def test_draws_follow_the_official_semantics() -> None:
    emb, labels = _data(6, [2, 30, 12, 25, 5, 40])
    pos, neg = sample_pairs(emb, labels, repeats=3, seed=1, chunk_size=32)
    sizes = {int(k): int((labels == k).sum()) for k in labels.unique()}
    for r in range(3):
        for i in range(len(labels)):
            p = pos[r, i][pos[r, i] >= 0]
            assert len(p) == min(24, sizes[int(labels[i])] - 1)
            assert len(set(p.tolist())) == len(p) and i not in p.tolist()
            assert (labels[p] == labels[i]).all()
            assert len(set(neg[r, i].tolist())) == 24 and (labels[neg[r, i]] != labels[i]).all()


def test_negatives_are_uniform_over_other_images() -> None:
    # identity sizes 2 and 40 among others: negatives must be uniform over images, not over identities
    emb, labels = _data(4, [2, 40, 20, 30])
    _, neg = sample_pairs(emb, labels, repeats=150, seed=2, chunk_size=128, pool_size=64)
    anchor = int((labels == 100 + 7 * 3).nonzero()[0])  # an image of the 30-image identity: 62 others
    counts = torch.bincount(neg[:, anchor].reshape(-1), minlength=len(labels)).double()
    others = labels != labels[anchor]
    assert counts[~others].sum() == 0
    expected = 150 * 24 / 62
    assert (counts[others] - expected).abs().max() < 5 * expected**0.5


def test_exact_when_sampling_cannot_matter() -> None:
    # 3 identities of 12: every identity has 11 <= 24 positives and exactly 24 images outside it
    emb, labels = _data(3, 12)
    f = torch.nn.functional.normalize(emb, dim=1).numpy()
    lab = labels.numpy()
    d = np.array([scipy.stats.wasserstein_distance([f[i] @ f[j] for j in range(36) if lab[j] == lab[i] and j != i],
                                                   [f[i] @ f[j] for j in range(36) if lab[j] != lab[i]])
                  for i in range(36)])
    expected = 100 * (d - d.min()) / (d.max() - d.min())
    for seed, pool in [(0, 128), (7, 0), (3, 24)]:
        got = sdd_pseudo_labels(emb, labels, seed=seed, pool_size=pool)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-9)


def test_invariant_to_input_permutation() -> None:
    emb, labels = _data(12, [3, 30, 12, 25, 26, 2, 8, 40, 14, 9, 50, 27])
    kw = dict(repeats=3, seed=11, chunk_size=50)
    base = sdd_pseudo_labels(emb, labels, **kw)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    assert torch.equal(sdd_pseudo_labels(emb[perm], labels[perm], **kw), base[perm])
    assert not torch.equal(sdd_pseudo_labels(emb, labels, **{**kw, "seed": 12}), base)  # the seed matters


def test_float32_close_to_float64_and_range() -> None:
    emb, labels = _data(10, 30)
    q64 = sdd_pseudo_labels(emb, labels, repeats=2)
    q32 = sdd_pseudo_labels(emb.float(), labels, repeats=2)
    assert q32.dtype == torch.float32 and (q32 - q64.float()).abs().max() < 1e-3
    assert q64.min() >= 0 and q64.max() <= 100


def test_singletons_and_too_few_negatives() -> None:
    emb, labels = _data(5, [1, 20, 20, 1, 20])
    with pytest.raises(LowlabelError, match="2 identities have a single image"):
        sdd_pseudo_labels(emb, labels)
    q = sdd_pseudo_labels(emb, labels, repeats=1, skip_singletons=True)  # one repetition: min 0, max 100
    sizes = torch.tensor([int((labels == k).sum()) for k in labels.tolist()])
    assert torch.equal(torch.isnan(q), sizes == 1) and int(torch.isnan(q).sum()) == 2
    assert q[sizes > 1].min() == 0 and q[sizes > 1].max() == 100
    emb, labels = _data(2, [20, 20])
    with pytest.raises(LowlabelError, match="fewer than n_neg=24 images outside"):
        sdd_pseudo_labels(emb, labels)
    with pytest.raises(LowlabelError, match="integer"):
        sdd_pseudo_labels(emb, labels.double(), n_neg=5)


def test_minmax_and_huber() -> None:
    d = torch.tensor([[1.0, 3.0, 2.0, float("nan")], [5.0, 5.0, 5.0, 5.0]])
    q = minmax_100(d)
    assert torch.allclose(q[0, :3], torch.tensor([0.0, 100.0, 50.0])) and torch.isnan(q[0, 3])
    assert torch.equal(q[1], torch.zeros(4))
    pred, target = torch.tensor([0.5, 10.0]), torch.tensor([0.0, 0.0])
    assert torch.isclose(huber_regression_loss(pred, target), torch.tensor((0.125 + 9.5) / 2))
    assert torch.isclose(huber_regression_loss(pred, target, "l2"), torch.tensor((0.25 + 100) / 2))


def test_intra_class_ablation_matches_a_loop_over_the_same_positives() -> None:
    emb, labels = _data(9, [3, 30, 12, 25, 26, 2, 8, 40, 14])
    kw = dict(n_pos=24, repeats=3, seed=4, pool_size=128, chunk_size=64)
    pos, _ = sample_pairs(emb, labels, **kw)
    f = torch.nn.functional.normalize(emb, dim=1).numpy()
    means = np.array([[np.mean([f[i] @ f[j] for j in pos[r, i].tolist() if j >= 0]) for i in range(len(labels))]
                      for r in range(3)])
    lo, hi = means.min(1, keepdims=True), means.max(1, keepdims=True)
    expected = (100 * (means - lo) / (hi - lo)).mean(0)
    np.testing.assert_allclose(intra_class_labels(emb, labels, **kw).numpy(), expected, atol=1e-9)
    far = emb.clone()
    far[labels == labels[0]] *= 5  # the ablation sees only same-identity similarities: scaling is invisible
    np.testing.assert_allclose(intra_class_labels(far, labels, **kw).numpy(), expected, atol=1e-9)
