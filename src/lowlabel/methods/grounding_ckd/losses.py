"""CKD's losses as pure functions of tensors: region-phrase and image-sentence scores, the one-way contrastive (NCE)
loss, the distillation term with the detector as teacher over IoU neighbours, and the official weight ramp.

Spec "Losses": 1 = `nce_loss` (with `sentence_image_scores`), 2 = `distillation_loss` (with `distillation_targets`),
3 = `distillation_weight`. Embeddings come in unnormalised; every function L2-normalises them itself, as the official
model does before any score. `region_mask` (B, R), where given, marks real proposals (False = padding): an extension
for images with fewer proposals than R; the official code pads with zero rows that take part like real regions, which
is what `region_mask=None` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lowlabel.errors import LowlabelError

SCORE_SCALE = 2.0  # S(I, T) = 2.0 * sum_p max_r s(r, p) (a 1/tau with tau = 0.5)
NEIGHBOURS = 8  # K of the distillation's candidate set
TEACHER_NORMS = ("shift", "scale")


def _check(region: torch.Tensor, phrase: torch.Tensor, phrase_mask: torch.Tensor,
           region_mask: torch.Tensor | None) -> None:
    if region.dim() != 3 or phrase.dim() != 3 or region.shape[0] != phrase.shape[0] or \
            region.shape[2] != phrase.shape[2]:
        raise LowlabelError(f"region {tuple(region.shape)} and phrase {tuple(phrase.shape)} must be (B, R, D) and "
                            "(B, P, D) embeddings of the same B pairs and width D")
    if phrase_mask.shape != phrase.shape[:2]:
        raise LowlabelError(f"phrase_mask {tuple(phrase_mask.shape)} must be (B, P) = {tuple(phrase.shape[:2])}")
    if region_mask is not None:
        if region_mask.shape != region.shape[:2]:
            raise LowlabelError(f"region_mask {tuple(region_mask.shape)} must be (B, R) = {tuple(region.shape[:2])}")
        if not bool(region_mask.any(dim=1).all()):
            raise LowlabelError("region_mask leaves an image with no proposal; every image needs at least one")


def region_phrase_scores(region: torch.Tensor, phrase: torch.Tensor) -> torch.Tensor:
    """Cosine s(r, p) = <f(r), g(p)> of each phrase with each region of its own image.

    region (B, R, D), phrase (B, P, D) -> (B, P, R).

    Spec "Architecture": both embeddings L2-normalised (zero vectors stay zero). Grounding = argmax over R.
    """
    return torch.einsum("bpd,brd->bpr", F.normalize(phrase, dim=-1), F.normalize(region, dim=-1))


def sentence_image_scores(region: torch.Tensor, phrase: torch.Tensor, phrase_mask: torch.Tensor, *,
                          scale: float = SCORE_SCALE, region_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Image-sentence scores S(I_i, T_t) = scale * sum_{valid p of T_t} max_r s(r of I_i, p): (B, B), row t = sentence
    t, column i = image i (the official `logits`; the diagonal holds the pairs).

    region: (B, R, D) region embeddings of image i; phrase: (B, P, D) phrase embeddings of sentence t; phrase_mask:
    (B, P) bool, False = padding slot (contributes 0). Both embeddings are L2-normalised here. Spec "Image-sentence
    score", scale 2.0.
    """
    _check(region, phrase, phrase_mask, region_mask)
    cos = torch.einsum("tpd,ird->tpir", F.normalize(phrase, dim=-1), F.normalize(region, dim=-1))  # (B, P, B, R)
    if region_mask is not None:
        cos = cos.masked_fill(~region_mask[None, None], float("-inf"))
    best = cos.max(dim=-1).values  # (B, P, B)
    best = torch.where(phrase_mask[:, :, None], best, torch.zeros_like(best))
    return scale * best.sum(dim=1)


def nce_loss(region: torch.Tensor, phrase: torch.Tensor, phrase_mask: torch.Tensor, *, scale: float = SCORE_SCALE,
             region_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One-way contrastive loss L_nce = mean_t -log softmax_i S(I_i, T_t) at i = t (scalar; spec Loss 1).

    Shapes as `sentence_image_scores`. Each sentence is scored against every image of the batch; the other images
    are its negatives. As in the official code there is no image -> sentence term and two captions of one image in
    the same batch are not de-duplicated (a possible false negative).
    """
    logits = sentence_image_scores(region, phrase, phrase_mask, scale=scale, region_mask=region_mask)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def iou_neighbours(region_ious: torch.Tensor, k: int, region_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The k proposals of highest IoU with each proposal: (B, R, R) -> (B, R, k) indices, best first.

    As the official `tf.nn.top_k`: equal IoUs go to the lower index (a stable sort), and a proposal is its own first
    neighbour unless an identical box comes before it. Padding columns (region_mask False) come last. k > R is cut
    to R.
    """
    if region_ious.dim() != 3 or region_ious.shape[1] != region_ious.shape[2]:
        raise LowlabelError(f"region_ious {tuple(region_ious.shape)} must be (B, R, R)")
    if k < 1:
        raise LowlabelError(f"k={k}: the distillation needs at least one neighbour")
    if region_mask is not None:
        region_ious = region_ious.masked_fill(~region_mask[:, None, :], float("-inf"))
    order = torch.sort(region_ious, dim=-1, descending=True, stable=True).indices
    return order[..., : min(k, region_ious.shape[-1])]


def distillation_targets(region: torch.Tensor, phrase: torch.Tensor, teacher: torch.Tensor,
                         region_ious: torch.Tensor, k: int = NEIGHBOURS, *, teacher_norm: str = "shift",
                         region_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Candidate regions, student logits and teacher distribution of spec Loss 2, per phrase.

    region (B, R, D), phrase (B, P, D): embeddings; teacher (B, P, R): the detector's probability of the phrase's
    class on each region of the paired image; region_ious (B, R, R). Returns (neighbours, student, target, valid),
    each (B, P, K): N_K(r*) with r* = argmax_r s(r, p) (first index on ties), the raw cosines s(r, p) on N_K (no
    temperature), the detached target q = softmax over N_K of the normalised teacher, and which candidates are real
    proposals (q is 0 on the others). teacher_norm "shift": t - mean_{N_K} t (official, 545-class Open Images
    detector; softmax is shift-invariant, so q = softmax(t)); "scale": t / 2 (official, 80-class COCO detector).
    """
    if teacher_norm not in TEACHER_NORMS:
        raise LowlabelError(f"teacher_norm='{teacher_norm}': use 'shift' (Open Images detector) or 'scale' (COCO)")
    if teacher.shape != (*phrase.shape[:2], region.shape[1]):
        raise LowlabelError(f"teacher {tuple(teacher.shape)} must be (B, P, R) = "
                            f"{(*phrase.shape[:2], region.shape[1])}")
    cos = region_phrase_scores(region, phrase)  # (B, P, R)
    ranked = cos.detach() if region_mask is None else cos.detach().masked_fill(~region_mask[:, None], float("-inf"))
    anchor = ranked.argmax(dim=-1)  # (B, P), first maximum on ties
    table = iou_neighbours(region_ious, k, region_mask)  # (B, R, K)
    neighbours = table.gather(1, anchor[..., None].expand(-1, -1, table.shape[-1]))  # (B, P, K)
    if region_mask is None:
        valid = torch.ones_like(neighbours, dtype=torch.bool)
    else:
        valid = region_mask.gather(1, neighbours.flatten(1)).view_as(neighbours)
    student = cos.gather(2, neighbours)
    t = teacher.detach().to(cos.dtype).gather(2, neighbours)
    mean = (t * valid).sum(-1, keepdim=True) / valid.sum(-1, keepdim=True)
    t = t / 2.0 if teacher_norm == "scale" else t - mean
    target = torch.softmax(t.masked_fill(~valid, float("-inf")), dim=-1)
    return neighbours, student, target, valid


def distillation_loss(region: torch.Tensor, phrase: torch.Tensor, phrase_mask: torch.Tensor, teacher: torch.Tensor,
                      region_ious: torch.Tensor, k: int = NEIGHBOURS, *, teacher_norm: str = "shift",
                      region_mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_dis = mean over mapped phrases of CE(q, softmax_{N_K} s(., p)) (scalar; spec Loss 2).

    region (B, R, D), phrase (B, P, D), phrase_mask (B, P) bool, teacher (B, P, R) detector class probabilities
    (an all-zero row = phrase without a class: no distillation), region_ious (B, R, R) IoUs of each image's
    proposals (`lowlabel.metrics.grounding.box_iou`). Candidates, student and target as `distillation_targets`;
    gradients flow into the student cosines only. Deviations: a batch without any mapped phrase gives 0 (the official
    mean over an empty set is NaN); a phrase counts only where phrase_mask is True as well (the official mask is the
    teacher row alone; padded slots have zero rows there, so this is the same).
    """
    _check(region, phrase, phrase_mask, region_mask)
    _, student, target, valid = distillation_targets(region, phrase, teacher, region_ious, k,
                                                     teacher_norm=teacher_norm, region_mask=region_mask)
    log_p = torch.log_softmax(student.masked_fill(~valid, float("-inf")), dim=-1)
    ce = -torch.where(valid, target * log_p, torch.zeros_like(log_p)).sum(dim=-1)  # (B, P)
    mapped = phrase_mask & (teacher != 0).any(dim=-1)
    if not bool(mapped.any()):
        return student.sum() * 0.0
    return ce[mapped].mean()


def distillation_weight(step: int, *, block: int = 500, start: float = 0.001, cap: float = 3.0) -> float:
    """lambda(step) = min(start + floor(step / block), cap): 0.001 for steps 0-499, 1.001 from 500, 2.001 from 1000,
    3.0 from 1500 (spec Loss 3; the official code's commented alternative uses block=200)."""
    if step < 0:
        raise LowlabelError(f"step={step}: the ramp is defined for steps >= 0")
    return min(start + float(step // block), cap)
