"""fold_batchnorm and prefer_channels_last change speed, never the function: checked against the untouched model."""

import copy

import pytest
import torch
from torch import nn

from lowlabel.nn.fast import fold_batchnorm, prefer_channels_last
from lowlabel.nn.vnet import VNet


def _randomise_norms(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so a wrong fold cannot pass by accident."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(n, generator=gen))
                m.bias.data.copy_(torch.randn(n, generator=gen))


def test_fold_batchnorm_matches_eval_mode_and_leaves_the_original_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
        nn.ConvTranspose3d(4, 3, 2, stride=2, bias=False), nn.BatchNorm3d(3, affine=False),
        nn.BatchNorm3d(3),  # follows a norm, not a convolution: must stay
    )
    _randomise_norms(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 2, 4, 4, 4)
    folded = fold_batchnorm(model)
    assert model.training  # the original is neither switched to eval nor changed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    kinds = [type(m) for m in folded]
    assert kinds == [nn.Conv3d, nn.Identity, nn.ReLU, nn.ConvTranspose3d, nn.Identity, nn.BatchNorm3d]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-5, atol=1e-5)


def test_channels_last_vnet_and_folded_vnet_compute_the_same_as_the_plain_one() -> None:
    torch.manual_seed(0)
    plain = VNet(n_filters=4, dropout=False)
    _randomise_norms(plain)
    plain.eval()
    x = torch.randn(2, 1, 32, 32, 16)
    fast = prefer_channels_last(fold_batchnorm(plain), "cpu")
    assert fast.enc2[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        expected, got = plain(x), fast(x)
    for e, g in zip(expected, got, strict=True):
        assert g.is_contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_channels_last_training_gradients_are_as_accurate_as_contiguous_ones() -> None:
    # reference: the same step in float64; float32 rounding (BatchNorm in training mode sums over the batch and
    # the voxels) puts both float32 layouts about 1e-4 of the largest gradient away from it, depending on the
    # thread count; a wrong layout conversion would be off by the size of the gradients themselves
    torch.manual_seed(0)
    plain = VNet(n_filters=4, dropout=False)
    fast = prefer_channels_last(copy.deepcopy(plain), "cpu")
    exact = copy.deepcopy(plain).double()
    x = torch.randn(2, 1, 32, 32, 16)
    for net, inputs in ((plain, x), (fast, x), (exact, x.double())):
        level_set, logits = net(inputs)
        (level_set.square().mean() + logits.sigmoid().mean()).backward()
    scale = max(float(p.grad.abs().max()) for p in exact.parameters())
    for net in (plain, fast):
        for (name, p), q in zip(exact.named_parameters(), net.parameters(), strict=True):
            torch.testing.assert_close(q.grad.double(), p.grad, rtol=0, atol=1e-3 * scale, msg=name)


@pytest.mark.parametrize("device", ["cuda", "meta"])
def test_channels_last_only_on_cpu(device: str) -> None:
    model = nn.Conv3d(2, 4, 3)
    prefer_channels_last(model, device)
    assert model.weight.is_contiguous()
