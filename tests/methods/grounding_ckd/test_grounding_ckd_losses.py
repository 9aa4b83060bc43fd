"""CKD losses against loops over images, phrases and regions in Python floats, and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.grounding_ckd.losses import (
    distillation_loss,
    distillation_targets,
    distillation_weight,
    iou_neighbours,
    nce_loss,
    sentence_image_scores,
)


def unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(unit(a), unit(b), strict=True))


def loop_scores(region: torch.Tensor, phrase: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    """S[t][i] = 2 * sum over valid phrases p of sentence t of max over regions r of image i of cos(r, p)."""
    b = region.shape[0]
    out = [[0.0] * b for _ in range(b)]
    for t in range(b):
        for i in range(b):
            for p in range(phrase.shape[1]):
                if mask[t, p]:
                    out[t][i] += 2.0 * max(cosine(r.tolist(), phrase[t, p].tolist()) for r in region[i])
    return out


def loop_nce(region: torch.Tensor, phrase: torch.Tensor, mask: torch.Tensor) -> float:
    s = loop_scores(region, phrase, mask)
    b = len(s)
    return sum(-s[t][t] + math.log(sum(math.exp(v) for v in s[t])) for t in range(b)) / b


def batch(b: int, r: int, p: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    region = torch.randn(b, r, d, generator=g, dtype=torch.float64) * 3
    phrase = torch.randn(b, p, d, generator=g, dtype=torch.float64)
    mask = torch.rand(b, p, generator=g) < 0.7
    mask[:, 0] = True
    return region, phrase, mask


@pytest.mark.parametrize(("b", "r", "p", "d"), [(1, 1, 1, 2), (3, 4, 2, 5), (6, 7, 5, 8)])
def test_scores_and_nce_match_loops(b: int, r: int, p: int, d: int) -> None:
    region, phrase, mask = batch(b, r, p, d, seed=b)
    expected = torch.tensor(loop_scores(region, phrase, mask), dtype=torch.float64)
    torch.testing.assert_close(sentence_image_scores(region, phrase, mask), expected, rtol=1e-12, atol=1e-12)
    assert nce_loss(region, phrase, mask).item() == pytest.approx(loop_nce(region, phrase, mask), rel=1e-10)
    got32 = nce_loss(region.float(), phrase.float(), mask).item()
    assert got32 == pytest.approx(loop_nce(region, phrase, mask), rel=1e-4, abs=1e-5)


def test_nce_ignores_padding_and_scale_of_embeddings() -> None:
    region, phrase, mask = batch(4, 5, 3, 6, seed=9)
    mask[:, 2] = False
    base = nce_loss(region, phrase, mask)
    other = phrase.clone()
    other[:, 2] = torch.randn(4, 6, dtype=torch.float64) * 100
    assert nce_loss(region, other, mask).item() == pytest.approx(base.item(), rel=1e-12)
    assert nce_loss(region * 7.0, phrase * 0.1, mask).item() == pytest.approx(base.item(), rel=1e-12)


def test_nce_closed_form_for_orthogonal_pairs() -> None:
    # image i has one region e_i, sentence t one phrase e_t: S = 2 I, loss = -2 + log(e^2 + (B-1))
    b = 4
    eye = torch.eye(b, dtype=torch.float64)
    loss = nce_loss(eye[:, None, :], eye[:, None, :], torch.ones(b, 1, dtype=torch.bool))
    assert loss.item() == pytest.approx(-2 + math.log(math.exp(2) + b - 1), rel=1e-12)


def test_region_mask_excludes_padding_regions() -> None:
    region, phrase, mask = batch(3, 4, 2, 5, seed=4)
    keep = torch.tensor([[True, True, False, False], [True, True, True, True], [True, False, True, False]])
    got = sentence_image_scores(region, phrase, mask, region_mask=keep)
    for i in range(3):
        cols = keep[i].nonzero().squeeze(1)
        expected = sentence_image_scores(region[i : i + 1, cols].expand(3, -1, -1), phrase, mask)[:, 0]
        torch.testing.assert_close(got[:, i], expected)
    with pytest.raises(LowlabelError, match="no proposal"):
        sentence_image_scores(region, phrase, mask, region_mask=torch.zeros(3, 4, dtype=torch.bool))


def loop_distillation(region: torch.Tensor, phrase: torch.Tensor, mask: torch.Tensor, teacher: torch.Tensor,
                      ious: torch.Tensor, k: int, norm: str) -> float:
    """Reference: per phrase with a class, r* = first best cosine, K IoU-neighbours (ties: lower index), CE."""
    total, count = 0.0, 0
    for b in range(region.shape[0]):
        for p in range(phrase.shape[1]):
            if not mask[b, p] or not any(v != 0 for v in teacher[b, p].tolist()):
                continue
            cos = [cosine(r.tolist(), phrase[b, p].tolist()) for r in region[b]]
            best = max(range(len(cos)), key=lambda j: (cos[j], -j))
            nbrs = sorted(range(len(cos)), key=lambda j: (-ious[b, best, j].item(), j))[:k]
            t = [teacher[b, p, j].item() for j in nbrs]
            t = [v / 2 for v in t] if norm == "scale" else [v - sum(t) / len(t) for v in t]
            q = [math.exp(v) / sum(math.exp(u) for u in t) for v in t]
            s = [cos[j] for j in nbrs]
            log_z = math.log(sum(math.exp(v) for v in s))
            total += -sum(qi * (si - log_z) for qi, si in zip(q, s, strict=True))
            count += 1
    return total / count


def distill_batch(b: int, r: int, p: int, seed: int) -> tuple[torch.Tensor, ...]:
    region, phrase, mask = batch(b, r, p, 6, seed)
    g = torch.Generator().manual_seed(seed + 100)
    teacher = torch.rand(b, p, r, generator=g, dtype=torch.float64)
    teacher[:, -1] = 0  # the last phrase has no class
    ious = torch.rand(b, r, r, generator=g, dtype=torch.float64).round(decimals=1)  # many ties
    ious = (ious + ious.transpose(1, 2)) / 2
    ious.diagonal(dim1=1, dim2=2).fill_(1.0)
    return region, phrase, mask, teacher, ious


@pytest.mark.parametrize(("b", "r", "p", "k"), [(2, 3, 2, 8), (3, 10, 4, 8), (4, 12, 3, 3)])
@pytest.mark.parametrize("norm", ["shift", "scale"])
def test_distillation_matches_loop(b: int, r: int, p: int, k: int, norm: str) -> None:
    region, phrase, mask, teacher, ious = distill_batch(b, r, p, seed=r)
    got = distillation_loss(region, phrase, mask, teacher, ious, k, teacher_norm=norm)
    assert got.item() == pytest.approx(loop_distillation(region, phrase, mask, teacher, ious, k, norm), rel=1e-10)


def test_teacher_distribution_sums_to_one_and_has_no_gradient() -> None:
    region, phrase, mask, teacher, ious = distill_batch(3, 9, 4, seed=5)
    region.requires_grad_(True)
    teacher.requires_grad_(True)
    keep = torch.ones(3, 9, dtype=torch.bool)
    keep[0, 5:] = False
    for region_mask in (None, keep):
        nbrs, student, target, valid = distillation_targets(region, phrase, teacher, ious, 8, region_mask=region_mask)
        assert nbrs.shape == student.shape == target.shape == (3, 4, 8)
        torch.testing.assert_close(target.sum(dim=-1), torch.ones(3, 4, dtype=torch.float64))
        assert (target >= 0).all() and not target.requires_grad
        assert (target[~valid] == 0).all()
    assert (~valid[0]).sum(dim=-1).tolist() == [3, 3, 3, 3]  # 5 real regions in image 0, K = 8
    loss = distillation_loss(region, phrase, mask, teacher, ious, 8, region_mask=keep)
    loss.backward()
    assert teacher.grad is None and torch.isfinite(region.grad).all() and region.grad.abs().sum() > 0


def test_neighbours_tie_to_lower_index_and_cut_k() -> None:
    ious = torch.tensor([[[1.0, 0.5, 0.5, 0.2, 0.5], [0.5, 1.0, 0.0, 0.0, 0.0], [0.5, 0.0, 1.0, 0.0, 0.0],
                          [0.2, 0.0, 0.0, 1.0, 0.0], [0.5, 0.0, 0.0, 0.0, 1.0]]])
    assert iou_neighbours(ious, 3)[0, 0].tolist() == [0, 1, 2]
    assert iou_neighbours(ious, 9)[0, 0].tolist() == [0, 1, 2, 4, 3]
    assert iou_neighbours(ious, 2)[0, 3].tolist() == [3, 0]
    masked = iou_neighbours(ious, 5, torch.tensor([[True, False, True, True, True]]))
    assert masked[0, 0].tolist() == [0, 2, 4, 3, 1]


def test_distillation_without_mapped_phrases_is_zero() -> None:
    region, phrase, mask, teacher, ious = distill_batch(2, 5, 3, seed=1)
    region.requires_grad_(True)
    loss = distillation_loss(region, phrase, mask, torch.zeros_like(teacher), ious, 8)
    assert loss.item() == 0.0
    loss.backward()
    assert (region.grad == 0).all()
    with pytest.raises(LowlabelError, match="teacher_norm"):
        distillation_loss(region, phrase, mask, teacher, ious, 8, teacher_norm="softmax")


def test_shift_normalisation_is_plain_softmax() -> None:
    region, phrase, _, teacher, ious = distill_batch(2, 6, 3, seed=2)
    nbrs, _, target, _ = distillation_targets(region, phrase, teacher, ious, 4)
    torch.testing.assert_close(target, torch.softmax(teacher.gather(2, nbrs), dim=-1))


@pytest.mark.parametrize(("step", "weight"), [(0, 0.001), (499, 0.001), (500, 1.001), (999, 1.001),
                                              (1000, 2.001), (1499, 2.001), (1500, 3.0), (10**6, 3.0)])
def test_distillation_weight_ramp(step: int, weight: float) -> None:
    assert distillation_weight(step) == pytest.approx(weight, abs=1e-12)
    assert distillation_weight(step, block=200) == pytest.approx(min(0.001 + step // 200, 3.0), abs=1e-12)
