"""Grounding metrics on hand-made boxes, against the official Fast R-CNN loop and by-hand values."""

from __future__ import annotations

import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.metrics.grounding import box_iou, grounding_accuracy, paired_iou, topk_hits


def official_loop(boxes: list[list[float]], query: list[list[float]]) -> list[list[float]]:
    """The `bbox_overlaps` loop of the CKD code, in Python floats."""
    out = [[0.0] * len(query) for _ in boxes]
    for k, q in enumerate(query):
        q_area = (q[2] - q[0] + 0.001) * (q[3] - q[1] + 0.001)
        for n, b in enumerate(boxes):
            iw = min(b[2], q[2]) - max(b[0], q[0]) + 0.001
            if iw > 0:
                ih = min(b[3], q[3]) - max(b[1], q[1]) + 0.001
                if ih > 0:
                    ua = (b[2] - b[0] + 0.001) * (b[3] - b[1] + 0.001) + q_area - iw * ih
                    out[n][k] = iw * ih / ua
    return out


def test_iou_by_hand() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0],
                      [10.0, 0.0, 20.0, 10.0]], dtype=torch.float64)
    got = box_iou(a, q)[0]
    side = 10.001
    assert got[0].item() == pytest.approx(1.0)
    half = 5.001 * side / (2 * side * side - 5.001 * side)  # overlap 5 (+0.001) wide of two 10-wide boxes
    assert got[1].item() == pytest.approx(half, rel=1e-12)
    assert got[2].item() == 0.0
    sliver = 0.001 * side / (2 * side * side - 0.001 * side)  # boxes sharing an edge overlap by 0.001
    assert got[3].item() == pytest.approx(sliver, rel=1e-9) and got[3].item() > 0


def test_iou_offsets_one_and_zero() -> None:
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 2.0, 1.0]], dtype=torch.float64)
    assert box_iou(a, b, offset=0.0)[0].tolist() == [0.5, 0.0]
    assert box_iou(a, b, offset=1.0)[0].tolist() == pytest.approx([4 / 6, 2 / 6])  # PASCAL +1: 2x2, 3x2 and 2x2


@pytest.mark.parametrize(("n", "k", "seed"), [(1, 1, 0), (7, 5, 1), (20, 13, 2)])
def test_iou_matches_official_loop(n: int, k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)

    def boxes(m: int) -> torch.Tensor:
        xy = torch.rand(m, 2, generator=g, dtype=torch.float64) * 50
        wh = torch.rand(m, 2, generator=g, dtype=torch.float64) * 30
        return torch.cat([xy, xy + wh], dim=1).round()  # integer corners: many shared edges and equal boxes

    a, q = boxes(n), boxes(k)
    expected = torch.tensor(official_loop(a.tolist(), q.tolist()), dtype=torch.float64)
    torch.testing.assert_close(box_iou(a, q), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(box_iou(q, a), expected.T, rtol=1e-12, atol=0)
    torch.testing.assert_close(paired_iou(a, a), torch.ones(n, dtype=torch.float64))


def test_accuracy_is_strict_at_one_half() -> None:
    gt = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2, dtype=torch.float64)
    pred = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    assert grounding_accuracy(pred, gt, offset=0.0) == 0.5  # IoU exactly 0.5 is a miss, 1.0 a hit
    # with the official +0.001 the first pair has IoU 1.001 / 2.001 > 0.5: a hit
    assert grounding_accuracy(pred, gt) == 1.0
    with pytest.raises(LowlabelError, match="no phrases"):
        grounding_accuracy(pred[:0], gt[:0])
    with pytest.raises(LowlabelError, match=r"\(N, 4\)"):
        box_iou(pred[:, :3], gt)


def test_topk_hits_ranks_and_masks() -> None:
    proposals = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 9.0, 10.0],
                              [100.0, 100.0, 110.0, 110.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0], [200.0, 200.0, 210.0, 210.0]])
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.0],   # right box ranked 3rd (2 is also right: ranked 2nd)
                           [0.3, 0.3, 0.3, 0.3],   # all tie: stable order 0, 1, 2, 3 -> hit only at rank 4
                           [1.0, 0.0, 0.0, 0.0]])  # no proposal covers it
    hits = topk_hits(scores, proposals, gt, ks=(1, 2, 3, 4, 10))
    assert hits.tolist() == [[False, True, True, True, True], [False, False, False, True, True],
                             [False] * 5]
    masked = topk_hits(scores, proposals, gt, ks=(1, 4), region_mask=torch.tensor([True, True, False, True]))
    assert masked.tolist() == [[False, True], [False, True], [False, False]]
