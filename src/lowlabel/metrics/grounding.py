"""Phrase-grounding metrics: box IoU with the official width convention, accuracy at IoU > 0.5, recall@k.

Boxes are (x1, y1, x2, y2) in pixels. The CKD evaluation (`eval_model.py` with the Fast R-CNN `bbox_overlaps` of
`bbox.pyx`) measures a side as x2 - x1 + 0.001 and counts a box as correct only when IoU > 0.5 (strict), which is
the default here; `offset=1` gives the PASCAL "+1" convention and `offset=0` the continuous one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lowlabel.errors import LowlabelError

OFFICIAL_OFFSET = 0.001  # bbox.pyx: width = x2 - x1 + 0.001 (not + 1)
OFFICIAL_THRESHOLD = 0.5  # eval_model.py / dataset_utils.py: correct iff IoU > 0.5 (strict)


def _check_boxes(boxes: torch.Tensor, name: str) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise LowlabelError(f"{name} has shape {tuple(boxes.shape)}; expected (N, 4) boxes x1, y1, x2, y2")


def _iou(b: torch.Tensor, q: torch.Tensor, offset: float) -> torch.Tensor:
    """IoU of broadcastable box tensors (..., 4) -> (...)."""
    iw = torch.minimum(b[..., 2], q[..., 2]) - torch.maximum(b[..., 0], q[..., 0]) + offset
    ih = torch.minimum(b[..., 3], q[..., 3]) - torch.maximum(b[..., 1], q[..., 1]) + offset
    inter = iw.clamp_min(0) * ih.clamp_min(0)
    area_b = (b[..., 2] - b[..., 0] + offset) * (b[..., 3] - b[..., 1] + offset)
    area_q = (q[..., 2] - q[..., 0] + offset) * (q[..., 3] - q[..., 1] + offset)
    union = area_b + area_q - inter
    return torch.where(inter > 0, inter / torch.where(inter > 0, union, torch.ones_like(union)),
                       torch.zeros_like(inter))


def box_iou(boxes: torch.Tensor, query_boxes: torch.Tensor, *, offset: float = OFFICIAL_OFFSET) -> torch.Tensor:
    """IoU of every box with every query box: (N, 4), (K, 4) x1y1x2y2 -> (N, K).

    Official convention (`bbox_overlaps` in the CKD code, from Fast R-CNN): a side is x2 - x1 + 0.001 and an
    intersection side min(x2) - max(x1) + 0.001, so boxes that share only an edge overlap by a sliver (IoU > 0) and a
    degenerate box (x1 = x2) has a tiny positive area. An intersection side <= 0 gives IoU 0. `offset` replaces the
    0.001 (1 for PASCAL-style integer boxes, 0 for continuous ones). Computed in the dtype of `boxes`.
    """
    _check_boxes(boxes, "boxes")
    _check_boxes(query_boxes, "query_boxes")
    return _iou(boxes[:, None, :], query_boxes[None, :, :].to(boxes.dtype), offset)


def paired_iou(boxes: torch.Tensor, other: torch.Tensor, *, offset: float = OFFICIAL_OFFSET) -> torch.Tensor:
    """IoU of box n of `boxes` with box n of `other`: (N, 4), (N, 4) -> (N,), the convention of `box_iou`."""
    _check_boxes(boxes, "boxes")
    if other.shape != boxes.shape:
        raise LowlabelError(f"paired boxes need equal shapes, got {tuple(boxes.shape)} and {tuple(other.shape)}")
    return _iou(boxes, other.to(boxes.dtype), offset)


def grounding_accuracy(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, *, threshold: float = OFFICIAL_THRESHOLD,
                       offset: float = OFFICIAL_OFFSET) -> float:
    """Fraction of phrases whose predicted box has IoU > `threshold` (strict) with its ground-truth box.

    pred_boxes, gt_boxes: (N, 4), row n is phrase n. This is the paper's "accuracy" (= Recall@1 of `eval_model.py`,
    which writes IoU > 0.5 where the paper says >= 0.5). A phrase with several ground-truth boxes must be reduced to
    one box first (e.g. their union: `lowlabel.methods.grounding_ckd.data.merge_boxes`).
    """
    if pred_boxes.shape[0] == 0:
        raise LowlabelError("grounding_accuracy got no phrases; give at least one (prediction, ground truth) pair")
    return (paired_iou(pred_boxes, gt_boxes, offset=offset) > threshold).double().mean().item()


def topk_hits(scores: torch.Tensor, proposals: torch.Tensor, gt_boxes: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
              *, region_mask: torch.Tensor | None = None, threshold: float = OFFICIAL_THRESHOLD,
              offset: float = OFFICIAL_OFFSET) -> torch.Tensor:
    """Per phrase and k: does any of its k best-scored proposals have IoU > `threshold` with its box? -> (P, len(ks)).

    scores: (P, R) region scores of the P phrases of one (image, sentence) pair; proposals: (R, 4) the image's
    boxes; gt_boxes: (P, 4); region_mask: optional (R,) bool, False = padding (never ranked). Summing over phrases
    and pairs and dividing by the phrase count gives the official Recall@k (`eval_model.py`, k in {1, 5, 10}); a phrase
    whose box no proposal covers is a miss. Ties between equal scores go to the lower region index (stable sort).
    k larger than R is cut to R.
    """
    if scores.dim() != 2 or scores.shape[1] != proposals.shape[0] or gt_boxes.shape[0] != scores.shape[0]:
        raise LowlabelError(f"scores {tuple(scores.shape)} must be (P, R) for proposals {tuple(proposals.shape)} "
                            f"and gt_boxes {tuple(gt_boxes.shape)}")
    if any(k < 1 for k in ks):
        raise LowlabelError(f"ks={list(ks)}: every k must be >= 1")
    if scores.shape[1] == 0:
        return torch.zeros(scores.shape[0], len(ks), dtype=torch.bool, device=scores.device)
    correct = box_iou(gt_boxes.double(), proposals.double(), offset=offset) > threshold  # (P, R)
    if region_mask is not None:
        scores = scores.masked_fill(~region_mask[None, :], float("-inf"))
        correct = correct & region_mask[None, :]
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranked = correct.gather(1, order)  # (P, R): is the j-th best proposal correct?
    first_hit = torch.cummax(ranked.int(), dim=1).values  # 1 from the first correct rank on
    columns = [min(k, scores.shape[1]) - 1 for k in ks]
    return first_hit[:, columns].bool()
