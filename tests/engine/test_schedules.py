from __future__ import annotations

import math

import pytest
import torch

from lowlabel.engine import schedules as S


def test_cosine_endpoints_and_midpoint():
    assert S.cosine(0, 100, 1.0, 0.0) == 1.0
    assert S.cosine(100, 100, 1.0, 0.0) == pytest.approx(0.0)
    assert S.cosine(50, 100, 1.0, 0.0) == pytest.approx(0.5)
    assert S.cosine(500, 100, 2.0, 1.0) == pytest.approx(1.0)


def test_sigmoid_rampup_values():
    assert S.sigmoid_rampup(0, 40) == pytest.approx(math.exp(-5))
    assert S.sigmoid_rampup(20, 40) == pytest.approx(math.exp(-5 * 0.25))
    assert S.sigmoid_rampup(40, 40) == 1.0 and S.sigmoid_rampup(99, 40) == 1.0


def test_linear_warmup_and_step_decay():
    assert [S.linear_warmup(s, 4) for s in (0, 2, 4, 8)] == [0.0, 0.5, 1.0, 1.0]
    assert [S.step_decay(s, [2500, 5000]) for s in (0, 2499, 2500, 5000)] == pytest.approx([1, 1, 0.1, 0.01])
    assert S.warmup_cosine(5, 10, 110) == pytest.approx(0.5)


def test_lr_scheduler_applies_factor():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01)
    sched = S.lr_scheduler(opt, lambda s: S.step_decay(s, [2]))
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.01, 0.01, 0.001, 0.001])
