"""The shapes-world probes of the recipe's evaluation and the demo (the probes themselves: tests/nn/test_probes.py)."""

from __future__ import annotations

import functools

import pytest
import torch

from lowlabel.methods.densecl import recipe
from lowlabel.methods.densecl.data import probe_data
from lowlabel.methods.densecl.recipe import probe_scores
from lowlabel.nn.resnet import resnet18


def test_class_probe_scenes_hold_one_object_of_the_labelled_shape() -> None:
    for part in probe_data(32, seed=0, single_object=True, n_train=20, n_test=10):
        for semantic, shape in zip(part.semantic, part.shape, strict=True):
            assert set(semantic.unique().tolist()) == {0, int(shape) + 1}


def test_probe_worlds_are_apart_from_each_other() -> None:
    seg_train, seg_test = probe_data(16, seed=0, n_train=4, n_test=4)
    assert not torch.equal(seg_train.images, seg_test.images)
    assert seg_train.n_seg_classes == 10


def test_probe_scores_give_both_metrics_in_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipe, "probe_data", functools.partial(probe_data, n_train=40, n_test=20))  # small worlds
    backbone = resnet18(num_classes=0, small_stem=True, width=4)
    scores = probe_scores(backbone, size=16, seed=0, device=torch.device("cpu"))
    assert set(scores) == {"miou", "class_acc"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
