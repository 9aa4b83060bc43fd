"""MLM / MVM masking and ITM negatives: exact rules on small cases, the 80/10/10 split statistically."""

from __future__ import annotations

import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.soho.masking import itm_negatives, mlm_mask, mvm_mask, token_overlap

SPECIAL = (0, 100, 101, 102, 103)  # [PAD] [UNK] [CLS] [SEP] [MASK] of the BERT vocabulary
VOCAB = 30522


def caption_batch(b: int, length: int, seed: int) -> torch.Tensor:
    """[CLS] words [SEP] [PAD]... rows with a random real length, an [UNK] here and there."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, VOCAB, (b, length), generator=g)
    lengths = torch.randint(3, length + 1, (b,), generator=g)
    for row, n in enumerate(lengths.tolist()):
        ids[row, 0], ids[row, n - 1] = 101, 102
        ids[row, n:] = 0
    ids[ids % 97 == 0] = 100
    return ids


def test_mlm_follows_80_10_10() -> None:
    ids = caption_batch(4000, 16, 0)
    g = torch.Generator().manual_seed(1)
    out, labels = mlm_mask(ids, special_ids=SPECIAL, mask_id=103, vocab_size=VOCAB, generator=g)
    special = torch.isin(ids, torch.tensor(SPECIAL))
    selected = labels != -100
    assert not (selected & special).any()
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(out[~selected], ids[~selected])  # nothing else changes
    n = int(selected.sum())
    rate = n / int((~special).sum())
    assert abs(rate - 0.15) < 4 * (0.15 * 0.85 / int((~special).sum())) ** 0.5
    masked = (out[selected] == 103).float().mean().item()
    kept = (out[selected] == ids[selected]).float().mean().item()
    randomised = 1 - masked - kept
    sd = (0.1 * 0.9 / n) ** 0.5
    assert abs(masked - 0.8) < 4 * (0.16 / n) ** 0.5
    assert abs(kept - 0.1) < 4 * sd and abs(randomised - 0.1) < 4 * sd
    # random replacements are spread over the whole vocabulary
    replaced = out[selected & (out != 103) & (out != ids)]
    assert replaced.min() < VOCAB // 4 and replaced.max() > 3 * VOCAB // 4


def test_mlm_is_reproducible_and_leaves_the_global_generator_alone() -> None:
    ids = caption_batch(8, 16, 2)
    state = torch.random.get_rng_state()
    a = mlm_mask(ids, special_ids=SPECIAL, mask_id=103, vocab_size=VOCAB, generator=torch.Generator().manual_seed(5))
    b = mlm_mask(ids, special_ids=SPECIAL, mask_id=103, vocab_size=VOCAB, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(LowlabelError, match="int64"):
        mlm_mask(ids.int(), special_ids=SPECIAL, mask_id=103, vocab_size=VOCAB)


@pytest.mark.parametrize(("b", "t", "k"), [(3, 6, 3), (8, 49, 10), (16, 16, 4)])
def test_mvm_masks_exactly_the_tokens_with_the_chosen_index(b: int, t: int, k: int) -> None:
    g = torch.Generator().manual_seed(b * t)
    indices = torch.randint(k, (b, t), generator=g)
    valid = torch.rand(b, t, generator=g) < 0.8
    for position in range(t):
        masked, labels = mvm_mask(indices, valid, prob=1.0, position=position, generator=g)
        for row in range(b):
            target = indices[row, position].item() if valid[row, position] else None
            expected = [valid[row, j].item() and indices[row, j].item() == target for j in range(t)]
            assert masked[row].tolist() == expected
            assert labels[row].tolist() == [indices[row, j].item() if expected[j] else -100 for j in range(t)]


def test_mvm_draws_one_position_for_the_whole_batch() -> None:
    g = torch.Generator().manual_seed(0)
    indices = torch.randint(5, (6, 12), generator=g)
    valid = torch.ones(6, 12, dtype=torch.bool)
    masked, _ = mvm_mask(indices, valid, prob=1.0, generator=g)
    # some position p explains every row's mask at once
    assert any(all(masked[r].tolist() == (indices[r] == indices[r, p]).tolist() for r in range(6)) for p in range(12))


def test_mvm_row_probability() -> None:
    indices = torch.zeros(4000, 4, dtype=torch.long)
    valid = torch.ones(4000, 4, dtype=torch.bool)
    masked, _ = mvm_mask(indices, valid, prob=0.3, generator=torch.Generator().manual_seed(3))
    rows = masked.any(1)
    assert torch.equal(masked, rows[:, None].expand(-1, 4))  # all or nothing per row
    assert abs(rows.float().mean().item() - 0.3) < 4 * (0.21 / 4000) ** 0.5
    none, _ = mvm_mask(indices, valid, prob=0.0)
    assert not none.any()
    with pytest.raises(LowlabelError, match="outside"):
        mvm_mask(indices, valid, position=4)


def test_token_overlap_is_the_jaccard_of_token_sets() -> None:
    ids = torch.tensor([[101, 7, 8, 9, 102, 0], [101, 8, 9, 9, 10, 102], [101, 102, 0, 0, 0, 0],
                        [101, 11, 102, 0, 0, 0]])
    sets = [{i for i in row if i not in SPECIAL} for row in ids.tolist()]
    got = token_overlap(ids, SPECIAL)
    for a in range(4):
        for b in range(4):
            union = sets[a] | sets[b]
            assert got[a, b].item() == pytest.approx(len(sets[a] & sets[b]) / len(union) if union else 0.0)


def test_itm_negatives_come_from_other_images() -> None:
    image_ids = torch.arange(500) // 4
    partner, labels = itm_negatives(image_ids, image_ids, generator=torch.Generator().manual_seed(0))
    negative = labels == 0
    assert abs(negative.float().mean().item() - 0.5) < 4 * (0.25 / 500) ** 0.5
    assert (partner[~negative] == -1).all()
    assert (image_ids[partner[negative]] != image_ids[negative]).all()


def test_itm_hard_negatives_follow_the_scores() -> None:
    image_ids = torch.tensor([0, 0, 1, 2])
    scores = torch.full((4, 4), -50.0)
    scores[:, 3] = 50.0  # candidate 3 (image 2) is the hardest for every pair but its own
    scores[3, 0] = 50.0
    partner, labels = itm_negatives(image_ids, image_ids, prob=1.0, scores=scores,
                                    generator=torch.Generator().manual_seed(0))
    assert labels.tolist() == [0, 0, 0, 0] and partner.tolist() == [3, 3, 3, 0]
    with pytest.raises(LowlabelError, match="another image"):
        itm_negatives(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), prob=1.0)
    with pytest.raises(LowlabelError, match="scores"):
        itm_negatives(image_ids, image_ids, scores=scores[:2])
