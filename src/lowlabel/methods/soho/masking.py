"""The pre-training tasks' input corruption: MLM token masks, MVM visual-word masks and ITM negative captions.

Pure functions of tensors; every random draw comes from the `generator` passed in (the official code draws from
the global numpy / torch / Python generators).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lowlabel.errors import LowlabelError

IGNORE = -100


def mlm_mask(input_ids: torch.Tensor, *, special_ids: Sequence[int], mask_id: int, vocab_size: int,
             generator: torch.Generator | None = None, prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of token ids (B, L) -> (corrupted ids (B, L), labels (B, L)) (spec "Losses", MLM).

    Each token whose id is not in `special_ids` ([CLS], [SEP], [PAD], [UNK], [MASK]) is selected with probability
    `prob`; a selected token becomes [MASK] with probability 0.8, else a uniform random id in [0, vocab_size)
    with probability 0.5 (0.1 overall), else stays (0.1 overall). labels = original id where selected, -100
    elsewhere. Draw order as the official `mask_tokens`: selection, [MASK], random, random ids.
    """
    if input_ids.dtype != torch.long:
        raise LowlabelError(f"token ids must be int64, got {input_ids.dtype}")
    maskable = ~torch.isin(input_ids, torch.as_tensor(list(special_ids), device=input_ids.device))
    shape, device = input_ids.shape, input_ids.device

    def coin(p: float) -> torch.Tensor:
        return torch.bernoulli(torch.full(shape, p), generator=generator).bool().to(device)

    selected = coin(prob) & maskable
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    to_mask = coin(0.8) & selected
    to_random = coin(0.5) & selected & ~to_mask
    random_ids = torch.randint(vocab_size, shape, generator=generator).to(device)
    out = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    return torch.where(to_random, random_ids, out), labels


def mvm_mask(indices: torch.Tensor, valid: torch.Tensor, *, generator: torch.Generator | None = None,
             prob: float = 0.015, position: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask every visual token that shares one visual word (spec "MVM masking").

    indices: (B, T) long dictionary index per visual token; valid: (B, T) bool, False on padding.
    One grid position p is drawn uniformly from [0, T) for the whole batch (or given as `position`); for row b the
    target word is indices[b, p] (none when p is padding in that row); each row is masked with probability `prob`
    (one Bernoulli per row). Returns (masked (B, T) bool: valid tokens of the target word in masked rows,
    labels (B, T) long: the dictionary index where masked, -100 elsewhere).
    """
    if indices.shape != valid.shape or indices.ndim != 2:
        raise LowlabelError(f"indices and valid must both be (B, T), got {tuple(indices.shape)} and "
                            f"{tuple(valid.shape)}")
    b, t = indices.shape
    if position is None:
        position = int(torch.randint(t, (1,), generator=generator))
    elif not 0 <= position < t:
        raise LowlabelError(f"MVM position {position} is outside the {t} visual tokens")
    words = torch.where(valid, indices, torch.full_like(indices, IGNORE))
    target = words[:, position : position + 1]
    rows = torch.bernoulli(torch.full((b, 1), prob), generator=generator).bool().to(indices.device)
    masked = (words == target) & valid & rows
    return masked, torch.where(masked, indices, torch.full_like(indices, IGNORE))


def token_overlap(input_ids: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    """Jaccard similarity of the token sets of every two captions: (B, L) ids -> (B, B) in [0, 1].

    Special tokens (and padding) are ignored; two captions with no ordinary token have similarity 0. A cheap,
    model-free hardness measure for ITM negatives (captions that differ in one colour word score high).
    """
    vocab = int(input_ids.max()) + 1 if input_ids.numel() else 1
    bags = torch.zeros(input_ids.shape[0], vocab, device=input_ids.device)
    bags.scatter_(1, input_ids, 1.0)
    specials = [i for i in special_ids if i < vocab]
    bags[:, specials] = 0
    inter = bags @ bags.t()
    sizes = bags.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


def itm_negatives(image_ids: torch.Tensor, candidate_ids: torch.Tensor, *, generator: torch.Generator | None = None,
                  prob: float = 0.5, scores: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose which pairs get a mismatched caption, and which one (spec "Losses", ITM).

    image_ids: (B,) the image of each pair; candidate_ids: (P,) the image of each candidate caption. With
    probability `prob` a pair becomes a negative (label 0) and takes the caption of a candidate from another
    image: uniformly (official: a random other image) or, given `scores` (B, P), with probability
    softmax(scores[b]) over those candidates (hard negatives: e.g. `token_overlap` / temperature).
    Returns (partner (B,) long: the candidate index for negatives, -1 for kept pairs; labels (B,) long 1 | 0).
    """
    b, p = image_ids.shape[0], candidate_ids.shape[0]
    if scores is not None and tuple(scores.shape) != (b, p):
        raise LowlabelError(f"ITM negative scores must be ({b}, {p}), got {tuple(scores.shape)}")
    negative = torch.rand(b, generator=generator).to(image_ids.device) < prob
    allowed = candidate_ids[None, :] != image_ids[:, None]
    if bool((negative & ~allowed.any(1)).any()):
        raise LowlabelError("an ITM negative needs a caption of another image, but every candidate shows the same "
                            "image; use batches or caption pools with at least two images")
    logits = torch.zeros(b, p, device=image_ids.device) if scores is None else scores.detach().float()
    weights = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=1).nan_to_num(0.0)
    weights[~negative] = 1.0 / p  # rows that stay positive: any valid distribution, result unused
    draw = torch.multinomial(weights.cpu(), 1, generator=generator).squeeze(1).to(image_ids.device)
    partner = torch.where(negative, draw, torch.full_like(draw, -1))
    return partner, (~negative).long()
