"""caption_relevance against a loop over the 25 cross-caption cosines; the MSE objective by hand."""

from __future__ import annotations

import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.sg_retrieval.losses import caption_relevance, pair_scores, relevance_mse


def _loop_reference(emb: torch.Tensor, owner: list[int], n: int, k: int = 5) -> torch.Tensor:
    """Official definition: per image the first k captions (zero-vector slots when missing), mean of k*k cosines."""
    emb = torch.nn.functional.normalize(emb.double(), dim=1)
    slots = torch.zeros(n, k, emb.shape[1], dtype=torch.float64)
    filled = [0] * n
    for row, i in enumerate(owner):
        if filled[i] < k:
            slots[i, filled[i]] = emb[row]
            filled[i] += 1
    rel = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            total = 0.0
            for a in range(k):
                for b in range(k):
                    total += float(slots[i, a] @ slots[j, b])
            rel[i, j] = total / (k * k)
    return rel


def test_caption_relevance_matches_loop_with_missing_and_extra_captions():
    gen = torch.Generator().manual_seed(0)
    # image 0: 7 captions (only the first 5 count), image 1: 1 caption, image 2: 5, image 3: 3; rows interleaved
    owner = [2, 0, 0, 1, 3, 0, 2, 2, 0, 3, 0, 2, 0, 2, 3, 0]
    emb = torch.randn(len(owner), 6, generator=gen) * 3  # not normalised: the function normalises
    ours = caption_relevance(emb, torch.tensor(owner), chunk_size=3)
    torch.testing.assert_close(ours.double(), _loop_reference(emb, owner, 4), atol=1e-5, rtol=1e-5)
    assert ours[1, 1].item() == pytest.approx(1 / 25, abs=1e-6)  # one caption: ||c||^2 / 25
    assert (torch.diagonal(ours) < 1).all()
    torch.testing.assert_close(ours, ours.T)


def test_caption_relevance_identical_captions_give_one_and_chunks_agree():
    base = torch.nn.functional.normalize(torch.randn(2, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    emb = base.repeat_interleave(5, 0)  # image 0: five copies of one caption, image 1: five copies of another
    owner = torch.arange(2).repeat_interleave(5)
    rel = caption_relevance(emb, owner)
    assert rel[0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert rel[0, 1].item() == pytest.approx(float(base[0] @ base[1]), abs=1e-6)
    gen = torch.Generator().manual_seed(2)
    emb2, owner2 = torch.randn(40, 8, generator=gen), torch.randint(0, 11, (40,), generator=gen)
    full = caption_relevance(emb2, owner2, n_images=12, chunk_size=100)
    out = torch.full((12, 12), float("nan"))
    torch.testing.assert_close(caption_relevance(emb2, owner2, n_images=12, chunk_size=5, out=out), full)
    assert full[11].abs().max() == 0  # an image with no caption has zero relevance to everything


def test_caption_relevance_rejects_bad_index():
    with pytest.raises(LowlabelError, match="image_index"):
        caption_relevance(torch.randn(3, 4), torch.tensor([0, 1, 5]), n_images=2)


def test_mse_and_scores_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    b = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
    s = pair_scores(a, b)
    torch.testing.assert_close(s, torch.tensor([0.0, 1.0]))
    assert relevance_mse(s, torch.tensor([0.5, 0.5])).item() == pytest.approx((0.25 + 0.25) / 2)
