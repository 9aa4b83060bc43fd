"""SOHO's pre-training losses (MLM, MVM, ITM) and the VQA fine-tuning loss and score, as pure functions of tensors.

Reductions follow the official code (spec "Losses", "VQA fine-tuning"): masked-token losses are sums of
per-token cross-entropy over the labelled tokens (label != -100) divided by (number labelled + 1e-6), so a batch
with no label gives 0; ITM is returned per pair. Total pre-training loss: mlm + mvm + itm.mean() (weights 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lowlabel.errors import LowlabelError

IGNORE = -100
EPS = 1e-6


def _wide(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 (the losses are computed at least in float32); other dtypes unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _masked_token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ CE over labels != -100, divided by (#labelled + 1e-6). logits (..., C), labels (...) long."""
    logits = logits.reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    if logits.shape[0] != labels.shape[0]:
        raise LowlabelError(f"{logits.shape[0]} score rows for {labels.shape[0]} labels; they must match")
    ce = F.cross_entropy(_wide(logits), labels, ignore_index=IGNORE, reduction="none")
    return ce.sum() / ((labels != IGNORE).float().sum() + EPS)


def mlm_loss(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked language modelling loss (spec "Losses", MLM), a scalar.

    pred: (N, V) or (B, L, V) vocabulary logits (the decoder tied to the word embeddings); labels: (N,) or (B, L)
    long, the original token id at masked positions and -100 elsewhere. L = Σ CE / (#masked + 1e-6).
    Only the labelled rows matter, so passing just the masked positions gives the same value.
    """
    return _masked_token_ce(pred, labels)


def mvm_scores(visual_out: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every visual output to every dictionary code: (..., d), (K, d) -> (..., K).

    No temperature, no parameters; the dictionary is detached (it learns only by its moving average).
    Normalisation as `F.normalize` (eps 1e-12), as officially.
    """
    return F.normalize(visual_out, dim=-1) @ F.normalize(dictionary.detach(), dim=-1).t()


def mvm_loss(visual_out: torch.Tensor, dictionary: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked visual modelling loss (spec "Losses", MVM), a scalar.

    visual_out: (N, d) or (B, T, d) fused outputs at the visual tokens; dictionary: (K, d) the Visual Dictionary
    codes; labels: (N,) or (B, T) long, the dictionary index of masked visual tokens and -100 elsewhere.
    logits = cos(o_i, e_j) (no temperature, so softmax over K codes is nearly flat: the loss floor is about
    ln K - 2); L = Σ CE / (#masked + 1e-6), 0 when no token is masked.
    """
    if visual_out.shape[-1] != dictionary.shape[-1]:
        raise LowlabelError(f"visual outputs have {visual_out.shape[-1]} channels, the dictionary "
                            f"{dictionary.shape[-1]}; they must match")
    return _masked_token_ce(mvm_scores(visual_out, dictionary), labels)


def itm_loss(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image-text matching loss per pair (spec "Losses", ITM): (B, 2) logits, (B,) long {0 mismatch, 1 match} ->
    (B,) cross-entropy. The official runner averages it (`.mean()`) before adding it to the total."""
    if pred.ndim != 2 or pred.shape[1] != 2 or labels.shape != pred.shape[:1]:
        raise LowlabelError(f"ITM needs (B, 2) logits and (B,) labels, got {tuple(pred.shape)} and "
                            f"{tuple(labels.shape)}")
    return F.cross_entropy(_wide(pred), labels, reduction="none")


def vqa_loss(pred: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """VQA answer-classification loss (spec "VQA fine-tuning"), a scalar.

    pred: (B, A) answer logits; soft_labels: (B, A) soft scores in [0, 1] (0.3 per annotator, capped at 1).
    L = mean BCE-with-logits over all B·A entries, times A (= Σ BCE / B), as the official head.
    """
    if pred.shape != soft_labels.shape or pred.ndim != 2:
        raise LowlabelError(f"VQA needs (B, A) logits and soft labels of the same shape, got {tuple(pred.shape)} "
                            f"and {tuple(soft_labels.shape)}")
    bce = F.binary_cross_entropy_with_logits(_wide(pred), _wide(soft_labels).to(_wide(pred).dtype), reduction="mean")
    return bce * soft_labels.shape[1]


def vqa_score(pred: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Per-question VQA score (B,): the soft label of the arg-max answer (official `compute_score_with_logits`).

    pred, soft_labels: (B, A). Ties in pred go to the lowest answer index. No gradient.
    """
    if pred.shape != soft_labels.shape or pred.ndim != 2:
        raise LowlabelError(f"VQA needs (B, A) logits and soft labels of the same shape, got {tuple(pred.shape)} "
                            f"and {tuple(soft_labels.shape)}")
    best = pred.detach().argmax(dim=1, keepdim=True)
    return soft_labels.detach().gather(1, best).squeeze(1)
