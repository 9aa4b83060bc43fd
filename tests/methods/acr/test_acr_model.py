"""ACR's stateful pieces: frozen source model, EMA teacher, feature tables, imprinting, BN freezing, loading."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lowlabel.engine.checkpoint import export_weights
from lowlabel.errors import LowlabelError
from lowlabel.methods.acr.losses import (
    akc_loss,
    arc_active,
    entropy_mask,
    fixmatch_loss,
    mmd_loss,
)
from lowlabel.methods.acr.model import (
    EmaTeacher,
    FeatureTables,
    SourceModel,
    TargetClassifier,
    bn_stats_frozen,
    imprinted_weights,
    interleave,
    load_source,
    read_state,
    resnet_from_state,
)
from lowlabel.nn.resnet import resnet18, resnet50


class ConvBackbone(nn.Module):
    """Two conv-BN-ReLU layers: a backbone with `forward_features` and `feature_dim`, fast on CPU."""

    feature_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def pretrained_backbone(seed: int = 0) -> ConvBackbone:
    torch.manual_seed(seed)
    backbone = ConvBackbone()
    # non-trivial running statistics, as a pretrained network has
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return backbone


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_source_model_unchanged_by_a_step_on_the_combined_loss() -> None:
    backbone = pretrained_backbone()
    source = SourceModel(backbone=backbone, head=nn.Linear(8, 10))
    target = TargetClassifier(backbone=backbone, num_classes=3)  # the same object: the source holds its own copy
    assert not any(p.data_ptr() == q.data_ptr() for p in source.parameters() for q in target.parameters())
    both = nn.ModuleDict({"source": source, "target": target})
    both.train()
    assert not source.training and not any(m.training for m in source.modules())
    assert all(not p.requires_grad for p in source.parameters())
    before_source, before_target = snapshot(source), snapshot(target)
    tables = FeatureTables(dim=8, size=32)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # fill the tables past ARC's 20-row start condition
        tables.update(torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g),
                      torch.ones(16, dtype=torch.bool), torch.ones(16, dtype=torch.bool))
    # everything in one optimiser on purpose, with weight decay and momentum: the source must still not move
    opt = torch.optim.SGD(both.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    x_l, y_l = torch.randn(4, 3, 8, 8, generator=g), torch.tensor([0, 1, 2, 0])
    x_w, x_s = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    fmap, logits = target(torch.cat([x_l, x_w, x_s]))
    f_l, f_w = fmap[:4], fmap[4:8]
    z_l, z_w, z_s = logits.split(4)
    src_fmap, src_logits = source(torch.cat([x_l, x_w]))
    loss = nn.functional.cross_entropy(z_l, y_l) + fixmatch_loss(z_s, z_w, threshold=0.0)
    loss = loss + akc_loss(torch.cat([f_l, f_w]), src_fmap, entropy_mask(src_logits, 1.0, 10))
    tabs = tables.update(f_l, f_w, entropy_mask(z_l, 1.0, 3), entropy_mask(z_w, 1.0, 3))
    assert tabs is not None and arc_active(11, len(tabs[0]))
    loss = loss + 50 * mmd_loss(*tabs)
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in source.parameters())
    assert all(p.grad is not None for p in target.parameters())
    opt.step()
    after = snapshot(source)
    assert all(torch.equal(before_source[k], after[k]) for k in before_source)
    changed = snapshot(target)
    assert any(not torch.equal(before_target[k], changed[k]) for k in before_target)


def test_source_forward_uses_running_statistics() -> None:
    torch.manual_seed(1)
    net = resnet18(num_classes=6, width=4, small_stem=True)
    net.eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.fill_(2.0)
    source = load_source_from(net.state_dict())
    source.train()
    x = torch.randn(3, 3, 12, 12)
    fmap, logits = source(x)
    assert torch.allclose(logits, net(x), atol=1e-5)
    assert torch.allclose(fmap, net.forward_features(x), atol=1e-5)
    assert not logits.requires_grad


def load_source_from(state: dict[str, torch.Tensor]) -> SourceModel:
    backbone, head = resnet_from_state(state)
    return SourceModel(backbone=backbone, head=head)


# ---- EMA teacher ----

class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.lin(x))


@pytest.mark.parametrize("average_buffers", [False, True])
def test_ema_teacher_follows_the_official_update(average_buffers: bool) -> None:
    torch.manual_seed(0)
    student = Small()
    teacher = EmaTeacher(student, average_buffers=average_buffers)
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.update(student)  # step 0: factor 0, a copy
    assert torch.equal(teacher.module.lin.weight, student.lin.weight)
    w0, rm0 = student.lin.weight.detach().clone(), student.bn.running_mean.clone()
    with torch.no_grad():
        student.lin.weight.add_(1.0)
        student.bn.running_mean.fill_(4.0)
    teacher.update(student)  # step 1: factor min(1 - 1/2, 0.999) = 0.5
    assert torch.allclose(teacher.module.lin.weight, 0.5 * w0 + 0.5 * (w0 + 1.0))
    expected_rm = 0.5 * rm0 + 0.5 * 4.0 if average_buffers else torch.full((2,), 4.0)
    assert torch.allclose(teacher.module.bn.running_mean, expected_rm)
    for _ in range(8):
        teacher.update(student)  # steps 2..9
    # after the jump the gap to the student shrinks by the factor of each step: Π_{t=2..9} (1 - 1/(t+1)) = 1/5
    assert torch.allclose(teacher.module.lin.weight, w0 + 1.0 - 0.5 / 5, atol=1e-6)


def test_ema_teacher_weight_decay_and_forward() -> None:
    student = Small()
    teacher = EmaTeacher(student)
    teacher.update(student, weight_decay=0.1)
    assert torch.allclose(teacher.module.lin.weight, 0.9 * student.lin.weight)
    assert torch.equal(teacher.module.bn.weight, student.bn.weight)  # BN is not decayed
    assert teacher(torch.randn(5, 3)).shape == (5, 2)
    assert "n_averaged" in teacher.state_dict()


# ---- ARC tables ----

def test_feature_tables_store_detached_rows_oldest_first() -> None:
    tables = FeatureTables(dim=2, size=3)
    feats = torch.arange(8, dtype=torch.float32).view(4, 2).requires_grad_(True)
    out = tables.update(feats, feats * 10, torch.tensor([True, False, True, True]), torch.tensor([1, 0, 0, 0]) > 0)
    assert out is not None
    assert out[0][:, 0].tolist() == [0.0, 4.0, 6.0] and out[1][:, 0].tolist() == [0.0]
    assert out[0].requires_grad and not tables.labelled.requires_grad
    out = tables.update(feats + 100, feats, torch.tensor([False, True, False, False]), torch.ones(4) > 0)
    stored_l, stored_u = tables.tables()
    assert stored_l[:, 0].tolist() == [4.0, 6.0, 102.0]
    assert stored_u[:, 0].tolist() == [2.0, 4.0, 6.0]
    # an empty mask on either side: no update, no loss (official)
    assert tables.update(feats, feats, torch.zeros(4) > 0, torch.ones(4) > 0) is None
    assert tables.tables()[0][:, 0].tolist() == [4.0, 6.0, 102.0]
    copy_ = FeatureTables(dim=2, size=3)
    copy_.load_state_dict(tables.state_dict())
    assert torch.equal(copy_.tables()[1], stored_u)


def test_feature_tables_pool_maps_and_reject_bad_size() -> None:
    tables = FeatureTables(dim=2, size=4)
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 1] = 2.0
    tables.update(maps, maps, torch.ones(1) > 0, torch.ones(1) > 0)
    assert tables.tables()[0].tolist() == [[0.0, 2.0]]
    with pytest.raises(LowlabelError, match="size"):
        FeatureTables(dim=2, size=0)


# ---- imprinting, BN freezing, interleave ----

def test_imprinted_weights_hand_values() -> None:
    feats = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 4.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    s = 1 / math.sqrt(2)
    assert torch.allclose(imprinted_weights(feats, labels, 3), torch.tensor([[1.0, 0.0], [0.0, 1.0], [s, s]]))
    with pytest.raises(LowlabelError, match=r"\[3\]"):
        imprinted_weights(feats, labels, 4)
    model = TargetClassifier(backbone=resnet18(num_classes=0, width=1, small_stem=True), num_classes=3)
    assert torch.equal(model.fc.bias, torch.zeros(3))
    model.imprint_(torch.randn(6, 8).abs(), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.allclose(model.fc.weight.norm(dim=1), torch.ones(3))
    assert torch.equal(model.fc.bias, torch.zeros(3))


def test_bn_stats_frozen_normalises_with_batch_statistics_only() -> None:
    net = nn.Sequential(nn.BatchNorm1d(3))
    net.train()
    x = torch.randn(8, 3) * 2 + 1
    with bn_stats_frozen(net):
        out = net(x)
    bn = net[0]
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))
    assert int(bn.num_batches_tracked) == 0
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + bn.eps)
    assert torch.allclose(out, expected, atol=1e-5)
    net(x)  # outside the block the statistics move again
    assert not torch.equal(bn.running_mean, torch.zeros(3)) and bn.track_running_stats


def test_interleave_hand_layout_and_inverse() -> None:
    groups = [torch.arange(7) + 100 * g for g in range(3)]  # slices of sizes 2, 2, 3
    out = interleave(groups, 7)
    assert out[0].tolist() == [0, 1, 102, 103, 204, 205, 206]
    assert out[1].tolist() == [100, 101, 2, 3, 104, 105, 106]
    assert out[2].tolist() == [200, 201, 202, 203, 4, 5, 6]
    back = interleave(out, 7)
    assert all(torch.equal(a, b) for a, b in zip(back, groups, strict=True))
    with pytest.raises(LowlabelError):
        interleave([torch.arange(7), torch.arange(6)], 7)


# ---- loading source models ----

@pytest.mark.parametrize(("factory", "kwargs"), [(resnet18, {"width": 4}), (resnet50, {"width": 2}),
                                                 (resnet18, {"width": 4, "small_stem": True, "in_channels": 1})])
def test_resnet_from_state_rebuilds_the_network(factory, kwargs) -> None:
    torch.manual_seed(0)
    net = factory(num_classes=5, **kwargs).eval()
    backbone, head = resnet_from_state({f"module.{k}": v for k, v in net.state_dict().items()})
    x = torch.randn(2, kwargs.get("in_channels", 3), 32, 32)
    with torch.no_grad():
        assert torch.allclose(head(backbone.eval().forward_features(x).mean((2, 3))), net(x), atol=1e-5)


def test_checkpoint_prefixes_and_headless_backbones(tmp_path) -> None:
    body = {k: v for k, v in resnet18(num_classes=0, width=4).state_dict().items()}
    two = {**{f"encoder_q.backbone.{k}": v for k, v in body.items()},
           **{f"encoder_k.backbone.{k}": v for k, v in body.items()}}
    with pytest.raises(LowlabelError, match="several networks"):
        resnet_from_state(two)
    backbone, head = resnet_from_state(two, prefix="encoder_q.backbone.")
    assert head is None and backbone.feature_dim == 32
    torch.save({"model": two, "step": 3}, tmp_path / "run.pt")
    assert set(read_state(tmp_path / "run.pt")) == set(two)
    export_weights(body, tmp_path / "densecl.safetensors")
    with pytest.raises(LowlabelError, match="no classifier"):
        load_source(tmp_path / "densecl.safetensors")


def test_unreadable_state_dicts_are_named(tmp_path) -> None:
    with pytest.raises(LowlabelError, match="torchvision key names"):
        resnet_from_state({"weight": torch.zeros(2)}, source="foo.pth")
    state = resnet18(num_classes=3, width=4).state_dict()
    del state["layer2.0.bn1.weight"]
    with pytest.raises(LowlabelError, match=r"layer2\.0\.bn1\.weight"):
        resnet_from_state(state)
    torch.save({"epoch": 3}, tmp_path / "bad.pth")
    with pytest.raises(LowlabelError, match=r"bad\.pth"):
        read_state(tmp_path / "bad.pth")
