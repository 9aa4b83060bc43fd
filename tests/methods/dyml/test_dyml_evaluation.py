"""Per-scale evaluation: per-level metrics worked by hand, the overall mean, separate queries, [H]'s rank-1 rows."""

from __future__ import annotations

import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.dyml.evaluation import mean_over_scales, retrieval_per_scale, top1_rows


def test_per_scale_on_a_hand_worked_line() -> None:
    # five unit vectors at these angles: similarity order = angle distance order (no ties)
    angles = torch.tensor([0.0, 0.1, 0.3, 0.62, 1.0], dtype=torch.float64)
    emb = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0], [2, 1, 0]])
    got = retrieval_per_scale(emb, labels, ks=(1, 2))
    # neighbours: q0 1,2,3,4; q1 0,2,3,4; q2 1,0,3,4; q3 2,4,1,0; q4 3,2,1,0
    # fine (q4 has no relevant item, skipped): q0, q1, q3 rank their pair first; q2 finds 3 at rank 3
    assert got["fine"] == pytest.approx({"map": (3 + 1 / 3) / 4, "asi": 3 / 4, "r_at_1": 3 / 4, "r_at_2": 3 / 4})
    # middle: q3 (middle 1) finds 4 at rank 2 -> AP 1/2, ASI = P@1 = 0; the rest rank their relevant items first
    assert got["middle"] == pytest.approx({"map": 4.5 / 5, "asi": 4 / 5, "r_at_1": 4 / 5, "r_at_2": 1.0})
    assert got["coarse"] == pytest.approx({"map": 1.0, "asi": 1.0, "r_at_1": 1.0, "r_at_2": 1.0})
    mean = {k: (got["fine"][k] + got["middle"][k] + got["coarse"][k]) / 3 for k in got["coarse"]}
    assert got["overall"] == pytest.approx(mean)


def test_separate_queries_and_rank1_protocol() -> None:
    g = torch.Generator().manual_seed(0)
    gallery, labels = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40, 3), generator=g)
    rows = torch.tensor([1, 5, 9])
    as_rows = retrieval_per_scale(gallery, labels, rows)
    separate = retrieval_per_scale(gallery, labels, rows, gallery[rows], labels[rows])
    for level, metrics in as_rows.items():
        assert separate[level] == pytest.approx(metrics)
    # [H]: the queries are in the gallery and the rank-1 item is dropped: the same rows here
    assert top1_rows(gallery[rows], gallery).tolist() == rows.tolist()
    noisy = gallery[rows] + 1e-3 * torch.randn(3, 5, generator=g)
    assert top1_rows(noisy, gallery, chunk=2).tolist() == rows.tolist()


def test_mean_over_scales_and_errors() -> None:
    assert mean_over_scales({"fine": {"map": 0.2}, "coarse": {"map": 0.6}, "overall": {"map": 9.0}}) == \
        pytest.approx({"map": 0.4})
    with pytest.raises(LowlabelError, match="same ks"):
        mean_over_scales({"fine": {"map": 0.2}, "coarse": {"asi": 0.6}})
    with pytest.raises(LowlabelError, match=r"give \(G, 3\)"):
        retrieval_per_scale(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
