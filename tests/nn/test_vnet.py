"""lowlabel.nn.vnet: the official parameter count, output shapes and ranges, additive skips, input checks."""

from __future__ import annotations

import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.nn.vnet import VNet


def _count(f: int) -> int:
    """Parameter count worked out layer by layer: conv3 = 27 c_in c_out + c_out, BN = 2 c, conv2/deconv2 = 8 c_in
    c_out + c_out, heads = f + 1 each."""

    def conv3(ci: int, co: int) -> int:
        return 27 * ci * co + co + 2 * co

    def k2(ci: int, co: int) -> int:
        return 8 * ci * co + co + 2 * co

    enc = conv3(1, f) + k2(f, 2 * f) + 2 * conv3(2 * f, 2 * f) + k2(2 * f, 4 * f) + 3 * conv3(4 * f, 4 * f)
    enc += k2(4 * f, 8 * f) + 3 * conv3(8 * f, 8 * f) + k2(8 * f, 16 * f) + 3 * conv3(16 * f, 16 * f)
    dec = k2(16 * f, 8 * f) + 3 * conv3(8 * f, 8 * f) + k2(8 * f, 4 * f) + 3 * conv3(4 * f, 4 * f)
    dec += k2(4 * f, 2 * f) + 2 * conv3(2 * f, 2 * f) + k2(2 * f, f) + conv3(f, f)
    return enc + dec + 2 * (f + 1)


def test_parameter_count_equals_official() -> None:
    assert sum(p.numel() for p in VNet().parameters()) == 9_448_866 == _count(16)
    assert sum(p.numel() for p in VNet(n_filters=4).parameters()) == _count(4)


def test_outputs_shapes_and_ranges() -> None:
    torch.manual_seed(0)
    net = VNet(n_filters=2).eval()
    with torch.no_grad():
        level_set, logits = net(torch.randn(2, 1, 16, 32, 16))
    assert level_set.shape == logits.shape == (2, 1, 16, 32, 16)
    assert float(level_set.abs().max()) < 1.0


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    net = VNet(n_filters=2, dropout=True)
    x = torch.randn(2, 1, 16, 16, 16)
    net.eval()
    a, b = net(x)[1], net(x)[1]
    assert torch.equal(a, b)
    net.train()
    assert not torch.equal(net(x)[1], net(x)[1])


def test_rejects_bad_inputs() -> None:
    net = VNet(n_filters=2)
    with pytest.raises(LowlabelError, match="divisible by 16"):
        net(torch.zeros(1, 1, 20, 16, 16))
    with pytest.raises(LowlabelError, match="H, W, D"):
        net(torch.zeros(1, 16, 16, 16))
    with pytest.raises(LowlabelError):
        VNet(n_filters=0)


def test_segment_and_the_no_grad_pass_equal_the_recorded_forward() -> None:
    torch.manual_seed(0)
    net = VNet(n_filters=4, dropout=False).eval()
    x = torch.randn(2, 1, 32, 32, 16)
    level_set, logits = net(x)  # gradients recorded: skips added out of place
    assert logits.requires_grad
    with torch.no_grad():  # skips added in place
        level_set_ng, logits_ng = net(x)
        seg = net.segment(x)
    torch.testing.assert_close(level_set_ng, level_set.detach())
    torch.testing.assert_close(logits_ng, logits.detach())
    torch.testing.assert_close(seg, logits.detach())
