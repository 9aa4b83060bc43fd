"""DenseCL model behaviour: gradients, the key encoder is really used, EMA, queues, MoCo-v2 mode, neck init."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lowlabel.engine import runtime as rt
from lowlabel.engine.batches import TensorBatches
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.trainer import Trainer
from lowlabel.errors import LowlabelError
from lowlabel.methods.densecl import model as model_mod
from lowlabel.methods.densecl.model import DenseCL, DenseCLNeck, Keys, build_backbone
from lowlabel.methods.densecl.recipe import enqueue_keys
from lowlabel.nn.resnet import ResNet, resnet18


def tiny(dense: bool = True, queue_size: int = 32) -> DenseCL:
    torch.manual_seed(0)
    return DenseCL(arch="resnet18", small_stem=True, width=8, hid_dim=32, out_dim=16, queue_size=queue_size,
                   dense=dense)


def views(seed: int = 0, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 16, 16, generator=g), torch.randn(batch, 3, 16, 16, generator=g)


def total(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(losses.values())  # type: ignore[return-value]


def test_one_step_grads_only_on_query_and_key_is_ema() -> None:
    model = tiny()
    with torch.no_grad():  # make the key encoder differ from the query so the EMA is visible
        for p in model.encoder_k.parameters():
            p.add_(0.1)
    q0 = {n: p.detach().clone() for n, p in model.encoder_q.named_parameters()}
    k0 = {n: p.detach().clone() for n, p in model.encoder_k.module.named_parameters()}
    runtime = rt.init("cpu", seed=0)
    m = 0.9

    def step_fn(mdl: nn.Module, batch: tuple[torch.Tensor, ...], step: int) -> tuple:
        return mdl(batch[0], batch[0].flip(-1), lam=0.5, momentum=m)

    grads: dict[str, torch.Tensor | None] = {}

    def record(mdl: nn.Module, keys: Keys, step: int) -> None:
        grads.update({n: p.grad for n, p in mdl.named_parameters()})
        enqueue_keys(mdl, keys, step)

    trainer = Trainer(model, step_fn, config=TrainConfig(max_steps=1, amp=False),
                      optim=OptimConfig(name="sgd", lr=0.5, momentum=0.0), runtime=runtime,
                      params=model.encoder_q.parameters(), after_step=record)
    trainer.fit(TensorBatches([views()[0]], 4, runtime))
    query = [n for n in grads if n.startswith("encoder_q.")]
    key = [n for n in grads if n.startswith("encoder_k.")]
    assert query and key and len(query) + len(key) == len(grads)
    assert all(grads[n] is not None and torch.isfinite(grads[n]).all() for n in query)
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in query if "dense_head" in n)
    assert all(grads[n] is None for n in key)
    for name, p in model.encoder_k.module.named_parameters():  # key update came first, from the pre-step query
        torch.testing.assert_close(p, m * k0[name] + (1 - m) * q0[name])
    assert any(not torch.equal(p, q0[n]) for n, p in model.encoder_q.named_parameters())


def test_loss_depends_on_key_encoder_weights() -> None:
    model = tiny()
    a, b = views(1)
    base = total(model(a, b, momentum=1.0)[0]).item()
    again = total(model(a, b, momentum=1.0)[0]).item()
    assert base == pytest.approx(again, rel=1e-6)  # nothing else moved
    with torch.no_grad():
        model.encoder_k.module.neck.global_head[0].weight.mul_(-1.0)
    assert abs(total(model(a, b, momentum=1.0)[0]).item() - base) > 1e-3
    changed = tiny()
    with torch.no_grad():
        w = changed.encoder_k.module.backbone.layer4[1].conv2.weight  # noise, not a scale: BN undoes scales
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * w.std())
    assert abs(total(changed(a, b, momentum=1.0)[0]).item() - base) > 1e-3


def test_keys_come_from_the_key_encoder() -> None:
    model = tiny()
    with torch.no_grad():
        for p in model.encoder_k.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    a, b = views(2)
    _, keys = model(a, b, momentum=1.0)
    with torch.no_grad():
        expected = nn.functional.normalize(model.encoder_k(b).neck.g, dim=1)
        online = nn.functional.normalize(model.encoder_q(b).neck.g, dim=1)
    torch.testing.assert_close(keys.global_, expected)
    assert not torch.allclose(keys.global_, online, atol=1e-3)


def test_queues_hold_last_k_keys_in_order_and_wrap() -> None:
    model = tiny(queue_size=6)
    batches = [torch.nn.functional.normalize(torch.randn(4, 16), dim=1) for _ in range(3)]
    pooled = [torch.nn.functional.normalize(torch.randn(4, 16), dim=1) for _ in range(3)]
    for g, p in zip(batches, pooled, strict=True):
        model.enqueue(Keys(g, p))
    torch.testing.assert_close(model.queue_global.ordered(), torch.cat(batches)[-6:].T)
    torch.testing.assert_close(model.queue_dense.ordered(), torch.cat(pooled)[-6:].T)
    assert int(model.queue_global.ptr) == 12 % 6


def test_enqueue_happens_after_the_loss_not_in_forward() -> None:
    model = tiny()
    before = model.queue_global.features.clone()
    losses, keys = model(*views(3))
    assert torch.equal(model.queue_global.features, before)
    total(losses).backward()
    model.enqueue(keys)
    torch.testing.assert_close(model.queue_global.features[:, :4], keys.global_.T)


def test_moco_mode_skips_the_dense_branch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny(dense=False)
    assert model.queue_dense is None and model.encoder_q.neck.dense_head is None
    assert not any("dense" in n for n, _ in model.named_parameters())

    def forbidden(*args: object) -> None:
        raise AssertionError("correspondence computed in MoCo-v2 mode")

    monkeypatch.setattr(model_mod, "dense_correspondence", forbidden)
    losses, keys = model(*views(4), lam=0.0)
    assert list(losses) == ["loss_contra_single"] and keys.pooled is None
    with pytest.raises(ValueError, match="dense branch"):
        model(*views(4), lam=0.5)


def test_neck_has_no_bn_and_spec_init() -> None:
    torch.manual_seed(0)
    neck = DenseCLNeck(in_dim=512, hid_dim=1024, out_dim=128)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in neck.modules())
    linear = [m for m in neck.modules() if isinstance(m, nn.Linear)]
    convs = [m for m in neck.modules() if isinstance(m, nn.Conv2d)]
    assert len(linear) == 2 and len(convs) == 2
    for m in linear:  # kaiming normal, fan_in, relu gain: std sqrt(2 / fan_in); zero bias
        assert m.weight.std().item() == pytest.approx(math.sqrt(2 / m.in_features), rel=0.05)
        assert torch.count_nonzero(m.bias) == 0
    for m in convs:  # PyTorch default: uniform within 1/sqrt(fan_in) (kaiming_uniform a=sqrt(5)), non-zero bias
        fan_in = m.in_channels
        assert m.weight.abs().max().item() <= 1 / math.sqrt(fan_in) + 1e-6
        assert torch.count_nonzero(m.bias) > 0
    g, r, p = neck(torch.randn(2, 512, 3, 3))
    assert g.shape == (2, 128) and r.shape == (2, 128, 9) and p.shape == (2, 128)
    torch.testing.assert_close(p, r.mean(dim=2))


def test_state_dict_round_trip_keeps_queues() -> None:
    model = tiny()
    model.enqueue(Keys(torch.randn(4, 16), torch.randn(4, 16)))
    clone = copy.deepcopy(tiny())
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.queue_dense.features, model.queue_dense.features)
    assert int(clone.queue_global.ptr) == 4


def test_backbone_is_lowlabel_resnet_at_the_asked_width() -> None:
    net = build_backbone("resnet18", small_stem=True, width=8)
    assert type(net) is ResNet and net.feature_dim == 64 and net.layer4[1].conv2.out_channels == 64
    reference = resnet18(num_classes=0, small_stem=True)  # torchvision's widths: same names, other shapes
    assert list(net.state_dict()) == list(reference.state_dict())
    assert net.forward_features(torch.zeros(2, 3, 64, 64)).shape == (2, 64, 8, 8)
    with pytest.raises(LowlabelError, match=r"model\.arch"):
        build_backbone("vgg16")
    with pytest.raises(LowlabelError, match=r"model\.width"):
        build_backbone("resnet18", width=0)
