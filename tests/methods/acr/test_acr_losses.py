"""ACR losses, gates and schedules against hand-worked values, double loops and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from lowlabel.engine.recipe import lr_factor
from lowlabel.errors import LowlabelError
from lowlabel.methods.acr.losses import (
    akc_loss,
    arc_active,
    ema_decay,
    entropy_mask,
    fixmatch_loss,
    ict_mixup,
    mean_squared_consistency,
    mmd_loss,
    sample_mixup,
    update_feature_table,
    warmup_weight,
)
from lowlabel.methods.acr.recipe import Config


def mmd_double_loop(a: torch.Tensor, b: torch.Tensor) -> float:
    """Biased MMD² with k(u, v) = exp(-mean_c (u_c - v_c)²), one pair at a time in Python floats."""
    def k(u, v):
        return math.exp(-sum((float(p) - float(q)) ** 2 for p, q in zip(u, v, strict=True)) / len(u))

    def mean_k(x, y):
        return sum(k(u, v) for u in x for v in y) / (len(x) * len(y))

    return mean_k(a, a) + mean_k(b, b) - 2 * mean_k(a, b)


# ---- entropy gate ----

def test_entropy_mask_uniform_two_classes_sits_on_the_boundary() -> None:
    logits = torch.zeros(3, 2, dtype=torch.float64)  # H = ln 2 exactly
    assert entropy_mask(logits, 1.0, 2).all()  # H <= 1.0 · ln 2
    assert not entropy_mask(logits, 1.0 - 1e-12, 2).any()


def test_entropy_mask_hand_value() -> None:
    # p = (1/4, 3/4): H = ln 4 - (3/4) ln 3 = 0.5623 nats = 0.8113 · ln 2
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    assert not entropy_mask(logits, 0.81, 2).item()
    assert entropy_mask(logits, 0.82, 2).item()
    # num_classes is separate from K: against ln 1000 the same prediction is confident
    assert entropy_mask(logits, 0.7, 1000).item()


@pytest.mark.parametrize(("support", "selected"), [(125, True), (126, False), (1000, False), (1, True)])
def test_entropy_mask_akc_default_bound(support: int, selected: bool) -> None:
    # uniform over `support` of 1000 classes: H = ln(support); bound 0.7 ln 1000 = 4.8354 = ln 125.9
    logits = torch.full((1, 1000), -1e4, dtype=torch.float64)
    logits[0, :support] = 0.0
    assert entropy_mask(logits, 0.7, 1000).item() is selected


def test_entropy_mask_shape_and_errors() -> None:
    mask = entropy_mask(torch.randn(7, 5), 0.7, 5)
    assert mask.dtype == torch.bool and mask.shape == (7,)
    with pytest.raises(LowlabelError, match="num_classes"):
        entropy_mask(torch.randn(2, 5), 0.7, 1)
    with pytest.raises(LowlabelError, match="logits"):
        entropy_mask(torch.randn(2, 5, 1), 0.7, 5)


# ---- MMD ----

def test_mmd_hand_computation() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    # kxx = [[1, e^-1], [e^-1, 1]], kyy = 1, kxy = [e^-1/2, e^-1/2]
    expected = (1 + math.exp(-1)) / 2 + 1 - 2 * math.exp(-0.5)
    assert mmd_loss(x, y).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("n", "m", "d"), [(3, 5, 4), (8, 2, 16), (6, 6, 1)])
def test_mmd_matches_double_loop(n: int, m: int, d: int) -> None:
    g = torch.Generator().manual_seed(n * 100 + m)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) + 0.5
    expected = mmd_double_loop(x.tolist(), y.tolist())
    assert mmd_loss(x, y).item() == pytest.approx(expected, abs=1e-10)
    assert mmd_loss(y, x).item() == pytest.approx(expected, abs=1e-10)
    assert mmd_loss(x.float(), y.float()).item() == pytest.approx(expected, abs=1e-5)


def test_mmd_of_a_set_with_itself_is_zero() -> None:
    x = torch.randn(9, 32, generator=torch.Generator().manual_seed(0)) * 3
    assert mmd_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert mmd_loss(x, x.clone()).item() >= -1e-6


def test_mmd_pools_feature_maps_first() -> None:
    g = torch.Generator().manual_seed(1)
    maps_x, maps_y = torch.randn(4, 6, 3, 5, generator=g), torch.randn(5, 6, 3, 5, generator=g)
    pooled_x = torch.stack([m.reshape(6, -1).sum(1) / 15 for m in maps_x])
    pooled_y = torch.stack([m.reshape(6, -1).sum(1) / 15 for m in maps_y])
    assert mmd_loss(maps_x, maps_y).item() == pytest.approx(mmd_loss(pooled_x, pooled_y).item(), abs=1e-6)
    assert mmd_loss(maps_x, pooled_y).item() == pytest.approx(mmd_loss(pooled_x, pooled_y).item(), abs=1e-6)


def test_mmd_gradient_and_errors() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    mmd_loss(x, torch.randn(4, 3)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(LowlabelError, match="same width"):
        mmd_loss(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(LowlabelError, match="non-empty"):
        mmd_loss(torch.randn(0, 4), torch.randn(3, 4))


# ---- AKC ----

def test_akc_hand_value() -> None:
    t = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 3.0]])
    s = torch.tensor([[0.0, 0.0], [5.0, 5.0], [1.0, 1.0]])
    # per-sample squared distances / 10: 0.5, 5.0, 0.8
    assert akc_loss(t, s, torch.tensor([True, False, True]), scale=10.0).item() == pytest.approx(0.65)
    assert akc_loss(t, s, torch.ones(3, dtype=torch.bool), scale=10.0).item() == pytest.approx(6.3 / 3)
    # float weights: (0.5 · 0.5 + 1 · 5.0) / 1.5
    weights = torch.tensor([0.5, 1.0, 0.0])
    assert akc_loss(t, s, weights, scale=10.0).item() == pytest.approx(5.25 / 1.5)


def test_akc_default_scale_is_ten_thousand() -> None:
    t, s = torch.full((2, 4), 100.0), torch.zeros(2, 4)  # squared distance 40000 per sample
    assert akc_loss(t, s, torch.ones(2, dtype=torch.bool)).item() == pytest.approx(4.0)


def test_akc_empty_selection_is_zero_with_zero_gradient() -> None:
    t = torch.randn(4, 8, 2, 2, requires_grad=True)
    s = torch.randn(4, 8, 2, 2, requires_grad=True)
    loss = akc_loss(t, s, torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(t.grad, torch.zeros_like(t))
    assert s.grad is None  # the source side is detached


def test_akc_pools_maps_and_checks_shapes() -> None:
    t = torch.zeros(1, 2, 2, 2)
    t[0, 0] = torch.tensor([[0.0, 4.0], [0.0, 0.0]])  # channel means (1, 0)
    s = torch.zeros(1, 2)
    assert akc_loss(t, s, torch.ones(1, dtype=torch.bool), scale=1.0).item() == pytest.approx(1.0)
    with pytest.raises(LowlabelError, match="feature width"):
        akc_loss(torch.randn(2, 3), torch.randn(2, 4), torch.ones(2, dtype=torch.bool))
    with pytest.raises(LowlabelError, match="mask"):
        akc_loss(torch.randn(2, 3), torch.randn(2, 3), torch.ones(3, dtype=torch.bool))


# ---- FIFO table ----

def rows(ids: list[int], dim: int = 3) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.float32)[:, None].repeat(1, dim)


def test_feature_table_fifo_order() -> None:
    table = update_feature_table(None, rows([0, 1, 2]), torch.tensor([True, True, True]), 5)
    assert table[:, 0].tolist() == [0, 1, 2]
    table = update_feature_table(table, rows([3, 4, 5, 6]), torch.tensor([True, False, True, True]), 5)
    assert table[:, 0].tolist() == [1, 2, 3, 5, 6]  # 4 not selected, 0 the oldest dropped
    table = update_feature_table(table, rows([7, 8]), torch.tensor([False, False]), 5)
    assert table[:, 0].tolist() == [1, 2, 3, 5, 6]
    table = update_feature_table(table, rows(list(range(10, 17))), torch.ones(7, dtype=torch.bool), 5)
    assert table[:, 0].tolist() == [12, 13, 14, 15, 16]


def test_feature_table_keeps_gradient_of_current_rows_only() -> None:
    old = rows([1, 2]).requires_grad_(True)
    new = rows([3, 4, 5]).requires_grad_(True)
    table = update_feature_table(old, new, torch.tensor([True, False, True]), 10)
    table.sum().backward()
    assert old.grad is None
    assert new.grad[:, 0].tolist() == [1.0, 0.0, 1.0]


def test_feature_table_without_size_and_errors() -> None:
    out = update_feature_table(rows([1, 2]), rows([3, 4]), torch.tensor([False, True]), 0)
    assert out[:, 0].tolist() == [4]  # official size -1: current selection only
    with pytest.raises(LowlabelError, match="mask"):
        update_feature_table(None, rows([1, 2]), torch.ones(3, dtype=torch.bool), 5)
    with pytest.raises(LowlabelError, match="table rows"):
        update_feature_table(rows([1], dim=4), rows([1, 2]), torch.ones(2, dtype=torch.bool), 5)


# ---- FixMatch and mean-squared consistency ----

def test_fixmatch_hand_value() -> None:
    teacher = torch.tensor([[0.0, 10.0], [0.0, 1.0]], requires_grad=True)  # max p: 0.99995, 0.731
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    ce_row0 = math.log(1 + math.exp(-1.0))  # CE(student_0, label 1)
    loss = fixmatch_loss(student, teacher)
    assert loss.item() == pytest.approx(ce_row0 / 2)  # mean over all N, row 1 masked
    loss.backward()
    assert teacher.grad is None
    assert student.grad[1].abs().sum() == 0
    assert fixmatch_loss(student, teacher, threshold=0.7).item() == pytest.approx((ce_row0 + math.log(2)) / 2)
    assert fixmatch_loss(student, teacher, threshold=1.0).item() == 0.0


def test_fixmatch_matches_loop_on_random_batches() -> None:
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(12, 6, generator=g), 4 * torch.randn(12, 6, generator=g)
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        exps = [math.exp(v) for v in t_row]
        conf = max(exps) / sum(exps)
        if conf >= 0.95:
            label = t_row.index(max(t_row))
            total += -s_row[label] + math.log(sum(math.exp(v) for v in s_row))
    assert fixmatch_loss(student, teacher).item() == pytest.approx(total / 12, rel=1e-5)


def test_mean_squared_consistency_hand_value() -> None:
    logits = torch.zeros(2, 2)  # p = (1/2, 1/2)
    target = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # t = (1/4, 3/4), (1/2, 1/2)
    # row 0: ((1/4)² + (1/4)²) / 2 = 1/16; row 1: 0
    assert mean_squared_consistency(logits, target).item() == pytest.approx(1 / 32)
    assert mean_squared_consistency(logits, target, torch.tensor([0.0, 1.0])).item() == 0.0
    assert mean_squared_consistency(logits, target, torch.tensor([True, False])).item() == pytest.approx(1 / 32)
    with pytest.raises(LowlabelError):
        mean_squared_consistency(torch.zeros(2, 3), target)


# ---- ICT mixup ----

def test_ict_mixup_against_loop() -> None:
    g = torch.Generator().manual_seed(5)
    x, logits = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 5, generator=g)
    lam, perm = torch.tensor([0.1, 0.5, 0.9, 1.0]), torch.tensor([2, 0, 3, 1])
    mixed_x, mixed_t = ict_mixup(x, logits, lam, perm)
    probs = logits.softmax(1)
    for i in range(4):
        w, j = float(lam[i]), int(perm[i])
        assert torch.allclose(mixed_x[i], w * x[i] + (1 - w) * x[j], atol=1e-6)
        assert torch.allclose(mixed_t[i].softmax(0), w * probs[i] + (1 - w) * probs[j], atol=1e-6)
    student = torch.randn(4, 5, generator=g)
    official = ((student.softmax(1) - (lam[:, None] * probs + (1 - lam[:, None]) * probs[perm])) ** 2).mean()
    assert mean_squared_consistency(student, mixed_t).item() == pytest.approx(official.item(), rel=1e-5)


def test_sample_mixup_is_seeded_beta() -> None:
    lam1, perm1 = sample_mixup(8, 0.75, torch.Generator().manual_seed(0))
    lam2, perm2 = sample_mixup(8, 0.75, torch.Generator().manual_seed(0))
    assert torch.equal(lam1, lam2) and torch.equal(perm1, perm2)
    assert sorted(perm1.tolist()) == list(range(8))
    lam, _ = sample_mixup(40000, 0.75, torch.Generator().manual_seed(1))
    assert ((lam > 0) & (lam < 1)).all()
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)) = 0.1 for a = 0.75
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam.var().item() == pytest.approx(0.1, abs=0.004)
    with pytest.raises(LowlabelError, match="alpha"):
        sample_mixup(4, 0.0)


# ---- schedules and gates ----

def test_warmup_weight_uses_iteration_plus_one() -> None:
    assert warmup_weight(50.0, 0, 100) == pytest.approx(0.5)
    assert warmup_weight(50.0, 98, 100) == pytest.approx(49.5)
    assert warmup_weight(50.0, 99, 100) == 50.0
    assert warmup_weight(50.0, 5000, 100) == 50.0
    assert warmup_weight(500.0, 0, 0) == 500.0


def test_arc_start_condition() -> None:
    assert not arc_active(10, 128)
    assert arc_active(11, 21)
    assert not arc_active(11, 20)
    assert arc_active(3, 5, start=2, min_rows=4)


def test_ema_decay_and_lr_factor() -> None:
    assert [ema_decay(s) for s in (0, 1, 9)] == pytest.approx([0.0, 0.5, 0.9])
    assert ema_decay(10**6) == 0.999
    assert ema_decay(0, warmup=False) == 0.999
    official = Config().optim
    assert lr_factor(0, 10000, official) == 1.0
    assert lr_factor(5000, 10000, official) == pytest.approx(math.cos(math.pi * 7.9 / 32))
    assert lr_factor(10000, 10000, official) == pytest.approx(0.0196, abs=1e-4)
    assert lr_factor(20000, 10000, official) == lr_factor(10000, 10000, official)
