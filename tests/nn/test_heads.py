from __future__ import annotations

import pytest
import torch
from torch import nn

from lowlabel.nn.heads import Layer, build_mlp, mlp


def test_mlp_layout_matches_specs():
    net = mlp([4, 8, 8, 3], norm="bn", act="relu", out_act="softmax")
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.Softmax]
    out = net.eval()(torch.randn(5, 4))
    torch.testing.assert_close(out.sum(1), torch.ones(5))


def test_conv1x1_head_keeps_spatial_shape():
    head = build_mlp(16, [Layer(32, act="relu"), Layer(8)], conv1x1=True)
    assert head(torch.randn(2, 16, 5, 7)).shape == (2, 8, 5, 7)


def test_bad_specs_are_errors():
    with pytest.raises(ValueError, match="unknown norm"):
        build_mlp(3, [Layer(4, norm="gn")])
    with pytest.raises(ValueError, match="unknown activation"):
        build_mlp(3, [Layer(4, act="swishy")])
    with pytest.raises(ValueError):
        mlp([3])
