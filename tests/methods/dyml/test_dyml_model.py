"""DyML networks: head shapes and pooling, proxies' seeded initialisation, gradients, state_dict round trip."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lowlabel.errors import LowlabelError
from lowlabel.methods.dyml.losses import csl_loss
from lowlabel.methods.dyml.model import CSLProxies, EmbeddingHead, EmbeddingNet
from lowlabel.nn.resnet import resnet18

TRAIN = torch.tensor([[0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 2, 1], [1, 0, 0]])


@pytest.mark.parametrize(("pool", "layer_norm"), [("avg", True), ("max", False)])
def test_head_pools_normalises_and_accepts_pooled_features(pool: str, layer_norm: bool) -> None:
    torch.manual_seed(0)
    head = EmbeddingHead(in_features=6, dim=4, pool=pool, layer_norm=layer_norm)
    fmap = torch.randn(3, 6, 5, 2)
    out = head(fmap)
    assert out.shape == (3, 4) and torch.allclose(out.norm(dim=1), torch.ones(3))
    pooled = fmap.mean((2, 3)) if pool == "avg" else fmap.amax((2, 3))
    assert torch.allclose(head(pooled), out, atol=1e-6)
    if layer_norm:  # LayerNorm without affine: a per-sample shift and rescale of the pooled feature changes nothing
        assert torch.allclose(head(3 * pooled + 1), out, atol=1e-3)  # up to LayerNorm's eps
    with pytest.raises(LowlabelError, match="pool"):
        EmbeddingHead(in_features=6, pool="sum")
    with pytest.raises(LowlabelError, match=r"\(B, C, H, W\) or \(B, C\)"):
        head(torch.randn(6))


def test_net_uses_forward_features_of_a_resnet_and_any_module() -> None:
    torch.manual_seed(0)
    net = EmbeddingNet(backbone=resnet18(num_classes=0, small_stem=True, width=8), in_features=64, dim=16, pool="max")
    out = net(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 16) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-6)
    flat = EmbeddingNet(backbone=nn.Flatten(), in_features=12, dim=5)
    assert flat(torch.randn(4, 3, 2, 2)).shape == (4, 5)


def test_proxies_seeded_init_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = CSLProxies(train_labels=TRAIN, dim=64, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = CSLProxies(train_labels=TRAIN, dim=64, seed=7)
    c = CSLProxies(train_labels=TRAIN, dim=64, seed=8)
    assert a.weight.shape == (4, 64) and torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    bound = 1 / math.sqrt(64)
    assert a.weight.abs().max() <= bound and a.weight.abs().max() > 0.8 * bound
    assert a.hierarchy.tolist() == [[0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 2, 1]]


def test_loss_reaches_every_parameter_and_state_dict_round_trips() -> None:
    torch.manual_seed(0)
    net = EmbeddingNet(backbone=nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), in_features=8, dim=6)
    proxies = CSLProxies(train_labels=TRAIN, dim=6)
    images, labels = torch.randn(5, 3, 7, 7), TRAIN
    loss = proxies.loss(net(images), labels)
    assert loss.item() == pytest.approx(csl_loss(net(images), labels, proxies.weight, TRAIN).item(), rel=1e-6)
    loss.backward()
    params = [*net.named_parameters(), *proxies.named_parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in params)
    copy = CSLProxies(train_labels=TRAIN, dim=6, seed=99)
    copy.load_state_dict(proxies.state_dict())
    assert torch.equal(copy.weight, proxies.weight) and set(proxies.state_dict()) == {"weight", "hierarchy"}


def test_proxies_reject_a_non_tree_table() -> None:
    with pytest.raises(LowlabelError, match="fine class 1 has more than one"):
        CSLProxies(train_labels=torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0]]), dim=4)
