"""FDRL demo pieces that need no training: the majority-class floor and the shared budget of the heads."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lowlabel.data.synth.faces import EXPRESSION_STYLES
from lowlabel.methods.fdrl import demo, recipe


def _split(labels: list[int]) -> recipe.Split:
    return recipe.Split(torch.zeros(len(labels), 3, 2, 2, dtype=torch.uint8), torch.tensor(labels), ("a", "b", "c"))


def test_majority_class_floor_by_hand() -> None:
    floor = demo.majority_class(_split([0, 1, 1, 2]), _split([1, 1, 0, 2, 2]))
    assert floor["accuracy"] == pytest.approx(2 / 5) and floor["balanced_accuracy"] == pytest.approx(1 / 3)
    assert demo.majority_class(_split([0, 0]), _split([1, 2]))["balanced_accuracy"] == 0.0


def test_heads_differ_only_in_head_and_rate() -> None:
    fdrl = demo.demo_config(False, 3, "fdrl", lr=1e-3, pretrained="b.pt")
    for head in ("linear", "centre", "mlp"):
        other = demo.demo_config(False, 3, head, lr=3e-4, pretrained="b.pt")
        assert dataclasses.replace(other, head="fdrl", optim=fdrl.optim) == fdrl
    for lrs in demo.TUNED_LR.values():
        assert set(lrs) == set(demo.MODELS) and all(lr in demo.LR_GRID for lr in lrs.values())
    assert demo.TUNED_LR[demo.WORLD] == demo.LR
    assert set(demo.TUNED_LR) == set(demo.TUNED_EPOCHS) == set(EXPRESSION_STYLES)
    assert not set(demo.SEEDS) & set(demo.TUNING_SEEDS) and demo.QUICK_SEED in demo.SEEDS
