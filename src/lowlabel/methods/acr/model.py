"""ACR's stateful pieces: target classifier, frozen source model, EMA teacher, ARC feature tables, source loading.

Every network here is a backbone with `forward_features(x) -> (B, C, h, w)` (the layer4 map the official code uses
for AKC and ARC) and `feature_dim`, plus a linear head on the spatial mean (spec: Architecture).
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from lowlabel.engine import checkpoint as ckpt
from lowlabel.errors import LowlabelError
from lowlabel.methods.acr.losses import EMA_FACTOR, TABLE_SIZE, ema_decay, pooled, update_feature_table
from lowlabel.nn.resnet import BasicBlock, Bottleneck, ResNet


class TargetClassifier(nn.Module):
    """The target model: a pretrained backbone and a new Linear(feature_dim -> num_classes) head.

    The head starts Xavier-normal with zero bias, as the official `build_ResNet`; `imprint_` then sets its weight
    rows to normalised class means. Every parameter is trained (official), so all are set to require gradients,
    also when the backbone was copied from a frozen `SourceModel`. `forward(x)` returns (layer4 map (B, C, h, w),
    logits (B, num_classes)).
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(True)
        self.fc = nn.Linear(int(backbone.feature_dim), num_classes)
        nn.init.xavier_normal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fmap = self.backbone.forward_features(x)
        return fmap, self.fc(fmap.mean(dim=(2, 3)))

    @torch.no_grad()
    def imprint_(self, features: Tensor, labels: Tensor) -> None:
        """Set the head's weight to `imprinted_weights(features, labels)`; the bias is left as it is (official)."""
        self.fc.weight.copy_(imprinted_weights(features, labels, self.fc.out_features))


def imprinted_weights(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Weight imprinting (official `imprint`): row c = mean of the pooled features of class c, L2-normalised.

    features (N, D) pooled features of the labelled images (eval-mode BN, one pass), labels (N,) -> (C, D).
    Features are not normalised per sample before averaging. A class with no labelled image is an error.
    """
    counts = torch.bincount(labels, minlength=num_classes)
    if len(counts) > num_classes or bool((counts == 0).any()):
        missing = (counts[:num_classes] == 0).nonzero().flatten().tolist()
        raise LowlabelError(f"imprinting needs labels in 0..{num_classes - 1} with every class present; classes "
                            f"without a labelled image: {missing[:10]}")
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    means = sums / counts[:, None].to(features.dtype)
    return means / means.norm(dim=1, keepdim=True)


class SourceModel(nn.Module):
    """The frozen source model for AKC: pretrained backbone and its own (e.g. 1000-way ImageNet) head.

    It keeps its own copies of `backbone` and `head`, so it never shares a parameter with the target model built
    from the same backbone. Parameters never require gradients and BatchNorm always runs in eval mode (running
    statistics used, never updated): `train()` is overridden, so a parent module's `.train()` cannot switch it,
    as the official code keeps `source_model.eval()`. `forward(x)` runs without autograd and returns
    (map (B, C, h, w), logits (B, K)).
    """

    def __init__(self, *, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = copy.deepcopy(backbone), copy.deepcopy(head)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> SourceModel:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fmap = self.backbone.forward_features(x)
        return fmap, self.head(fmap.mean(dim=(2, 3)))


class EmaTeacher(AveragedModel):
    """EMA teacher (official `ema_update`) on `torch.optim.swa_utils.AveragedModel`.

    `update(student)` after each optimiser step: parameters θ ← f θ + (1 - f) θ_student with f = `ema_decay(n)`,
    n the number of earlier updates (the first update copies, as the official f = 0 at step 0). Buffers
    (BatchNorm statistics) are averaged the same way when `average_buffers` (official `ema_teacher_train`),
    else copied from the student. Integer buffers (`num_batches_tracked`) are always copied. `weight_decay`
    (official `ema_apply_wd`: weight_decay · lr) shrinks the copy's conv and linear weights after the average.
    """

    def __init__(self, student: nn.Module, *, factor: float = EMA_FACTOR, warmup: bool = True,
                 average_buffers: bool = False) -> None:
        def average(avg: Tensor, current: Tensor, n: Tensor | int) -> Tensor:
            if not avg.is_floating_point():
                return current
            return torch.lerp(avg, current.to(avg.dtype), 1.0 - ema_decay(int(n), factor, warmup))

        super().__init__(student, avg_fn=average, use_buffers=average_buffers)
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module, weight_decay: float = 0.0) -> None:
        self.update_parameters(student)
        if weight_decay:
            for m in self.module.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.mul_(1.0 - weight_decay)


class FeatureTables(nn.Module):
    """ARC's labelled and unlabelled FIFO tables of pooled features, as checkpointed buffers (size, dim).

    The official tables hold layer4 maps and pool them inside the MMD; storing the spatial means instead is the
    same MMD with 1/(h·w) of the memory. `update` returns the tables to use in this step's MMD (current rows with
    gradient) and stores detached copies; it does nothing and returns None when either mask selects no row,
    as the official trainer.
    """

    labelled: Tensor
    unlabelled: Tensor
    labelled_rows: Tensor
    unlabelled_rows: Tensor

    def __init__(self, *, dim: int, size: int = TABLE_SIZE) -> None:
        super().__init__()
        if size < 1:
            raise LowlabelError(f"ARC feature table size={size}: must be at least 1 (official 128)")
        for name in ("labelled", "unlabelled"):
            self.register_buffer(name, torch.zeros(size, dim))
            self.register_buffer(f"{name}_rows", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.labelled.shape[0]

    def tables(self) -> tuple[Tensor, Tensor]:
        """The stored rows, oldest first: labelled (n_l, dim), unlabelled (n_u, dim)."""
        return self.labelled[: int(self.labelled_rows)], self.unlabelled[: int(self.unlabelled_rows)]

    def update(self, features_l: Tensor, features_u: Tensor, mask_l: Tensor,
               mask_u: Tensor) -> tuple[Tensor, Tensor] | None:
        """Append the selected rows. features (B, dim) or (B, dim, h, w) (pooled here), masks (B,) bool."""
        if not (bool(mask_l.any()) and bool(mask_u.any())):
            return None
        out = []
        for name, feats, mask in (("labelled", features_l, mask_l), ("unlabelled", features_u, mask_u)):
            stored, rows = getattr(self, name), getattr(self, f"{name}_rows")
            table = update_feature_table(stored[: int(rows)], pooled(feats), mask, self.size)
            with torch.no_grad():
                stored[: len(table)] = table.detach()
                rows.fill_(len(table))
            out.append(table)
        return out[0], out[1]


@contextlib.contextmanager
def bn_stats_frozen(module: nn.Module) -> Iterator[None]:
    """Inside the block, BatchNorm in train mode normalises with batch statistics but updates no running
    statistic (official `update_batch_stats(False)`, used for the student's forward on ICT-mixed images)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    flags = [m.track_running_stats for m in norms]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, flag in zip(norms, flags, strict=True):
            m.track_running_stats = flag


def interleave(groups: Sequence[Tensor], batch: int) -> list[Tensor]:
    """MixMatch's interleave: swap slice i of group 0 with slice i of group i (groups of `batch` rows each).

    Forwarding the returned chunks one by one gives every chunk BatchNorm statistics of labelled and unlabelled
    images alike (official `infer_interleave`); applying `interleave` again restores the original order.
    """
    if any(len(g) != batch for g in groups):
        raise LowlabelError(f"interleave needs groups of {batch} rows each, got {[len(g) for g in groups]}")
    n = len(groups) - 1
    sizes = [batch // (n + 1)] * (n + 1)
    for k in range(batch - sum(sizes)):
        sizes[-k - 1] += 1
    parts = [list(torch.split(g, sizes)) for g in groups]
    for i in range(1, n + 1):
        parts[0][i], parts[i][i] = parts[i][i], parts[0][i]
    return [torch.cat(p) for p in parts]


def read_state(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a weights file (.pth/.pt weights-only torch file or .safetensors), unwrapping a run checkpoint's
    or a training script's `model` / `state_dict` entry."""
    state: object = ckpt.load_weights(path)
    while isinstance(state, Mapping) and not any(isinstance(v, Tensor) for v in state.values()):
        inner = [state[k] for k in ("model", "state_dict") if isinstance(state.get(k), Mapping)]
        if not inner:
            raise LowlabelError(f"{path}: holds no tensors and no 'model' or 'state_dict' entry; give a state dict "
                                "of a torchvision-format network or a lowlabel checkpoint")
        state = inner[0]
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def find_prefix(keys: Sequence[str], anchors: Sequence[str], source: str, prefix: str | None = None) -> str:
    """The key prefix (e.g. '', 'module.', 'encoder_q.backbone.') under which every anchor key exists."""
    if prefix is not None:
        candidates = [prefix] if all(prefix + a in keys for a in anchors) else []
    else:
        candidates = sorted({k[: -len(anchors[0])] for k in keys if k.endswith(anchors[0])})
        candidates = [p for p in candidates if all(p + a in keys for a in anchors)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        shown = ", ".join(list(keys)[:5])
        raise LowlabelError(f"{source}: no network with torchvision key names ({', '.join(anchors)}) found"
                            f"{f' under prefix {prefix!r}' if prefix is not None else ''}; first keys: {shown}. "
                            "Give a torchvision-format state dict, a lowlabel backbone export, or the right prefix")
    raise LowlabelError(f"{source}: holds several networks (key prefixes {candidates}); choose one with prefix=")


def resnet_from_state(state: Mapping[str, Tensor], *, source: str = "state dict",
                      prefix: str | None = None) -> tuple[ResNet, nn.Linear | None]:
    """A lowlabel ResNet (any depth, width, stem) built from torchvision-format keys, and its `fc` head if present.

    The architecture is read from the tensors: block type (conv3 present -> Bottleneck), blocks per stage, stem
    width, input channels, 3x3 small stem. A DenseCL backbone export has no `fc`: the head is then None (fine for
    the target model and ARC; AKC's gate needs the source head's logits).
    """
    keys = list(state)
    p = find_prefix(keys, ("conv1.weight", "bn1.weight", "layer1.0.conv1.weight"), source, prefix)
    sub = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
    block = Bottleneck if "layer1.0.conv3.weight" in sub else BasicBlock
    layers = []
    for stage in range(1, 5):
        found = {int(m.group(1)) for k in sub if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        if not found:
            raise LowlabelError(f"{source}: no 'layer{stage}.*' tensors; only full 4-stage ResNets are supported")
        layers.append(max(found) + 1)
    width, in_channels, kernel = sub["conv1.weight"].shape[:3]
    net = ResNet(block, tuple(layers), num_classes=0, small_stem=kernel == 3, in_channels=int(in_channels),
                 width=int(width))
    body = {k: v for k, v in sub.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(body, strict=False)
    if missing or unexpected:
        raise LowlabelError(f"{source}: keys do not match a {block.__name__} ResNet {layers}: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}; is this a torchvision-format ResNet?")
    head = None
    if "fc.weight" in sub:
        weight = sub["fc.weight"]
        if weight.ndim != 2 or weight.shape[1] != net.feature_dim:
            raise LowlabelError(f"{source}: fc.weight {tuple(weight.shape)} does not fit {net.feature_dim} features")
        head = nn.Linear(weight.shape[1], weight.shape[0], bias="fc.bias" in sub)
        head.load_state_dict({k[3:]: v for k, v in sub.items() if k.startswith("fc.")})
    return net, head


def load_source(path: str | Path, *, prefix: str | None = None) -> SourceModel:
    """The frozen source model from a torchvision-format ResNet file (with its classifier `fc`)."""
    backbone, head = resnet_from_state(read_state(path), source=str(path), prefix=prefix)
    if head is None:
        raise LowlabelError(f"{path}: has no classifier (fc.*); AKC's entropy gate needs the source model's class "
                            "logits: give the checkpoint with its head, or set the AKC weight to 0")
    return SourceModel(backbone=backbone, head=head)



def mobilenet_from_state(state: Mapping[str, Tensor], *, source: str = "state dict",
                         prefix: str | None = None) -> tuple[nn.Module, nn.Linear | None]:
    """A lowlabel MobileNetV2 (width 1.0) from torchvision-format keys (`features.*`, `classifier.1.*`), and its
    classifier as a plain Linear when present (the dropout before it does nothing in the frozen source model)."""
    from lowlabel.nn.mobilenet import MobileNetV2

    keys = list(state)
    p = find_prefix(keys, ("features.0.0.weight", "features.1.conv.0.0.weight"), source, prefix)
    sub = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
    net = MobileNetV2(num_classes=0)
    missing, unexpected = net.load_state_dict({k: v for k, v in sub.items() if k.startswith("features.")},
                                              strict=False)
    if missing or unexpected:
        raise LowlabelError(f"{source}: keys do not match a width-1.0 MobileNetV2: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}")
    head = None
    if "classifier.1.weight" in sub:
        weight = sub["classifier.1.weight"]
        head = nn.Linear(weight.shape[1], weight.shape[0])
        head.load_state_dict({"weight": weight, "bias": sub["classifier.1.bias"]})
    return net, head


def backbone_from_state(state: Mapping[str, Tensor], *, source: str = "state dict",
                        prefix: str | None = None) -> tuple[nn.Module, nn.Linear | None]:
    """A ResNet or MobileNetV2 backbone (chosen by the keys) and its classifier (None when the file has none)."""
    if any(k.endswith("features.0.0.weight") for k in state):
        return mobilenet_from_state(state, source=source, prefix=prefix)
    return resnet_from_state(state, source=source, prefix=prefix)


class ACRNet(nn.Module):
    """Everything one ACR run trains or keeps: the student (`TargetClassifier`), the frozen `SourceModel` (AKC; None
    without AKC), the `EmaTeacher` (None without one) and the ARC `FeatureTables` (None without ARC).

    `forward(x, mixed=None)` is the one call that needs gradients (so DDP sees it): the student on x -> (layer4 map
    (B, C, h, w), logits (B, K)), and, for ICT, its logits on the mixed images with BatchNorm running statistics
    left untouched (official `update_batch_stats(False)`), else None. `predictor` is the network that is evaluated:
    the EMA teacher when there is one, else the student (spec: Inference).
    """

    def __init__(self, *, student: TargetClassifier, source: SourceModel | None = None, teacher: bool = False,
                 average_buffers: bool = False, ema_factor: float = EMA_FACTOR, table_size: int = 0) -> None:
        super().__init__()
        self.student, self.source = student, source
        self.teacher = (EmaTeacher(student, factor=ema_factor, average_buffers=average_buffers) if teacher
                        else None)
        self.tables = FeatureTables(dim=student.fc.in_features, size=table_size) if table_size > 0 else None

    def forward(self, x: Tensor, mixed: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        fmap, logits = self.student(x)
        mixed_logits = None
        if mixed is not None:
            with bn_stats_frozen(self.student):
                mixed_logits = self.student(mixed)[1]
        return fmap, logits, mixed_logits

    @property
    def predictor(self) -> nn.Module:
        return self.teacher.module if self.teacher is not None else self.student

    def classify(self, x: Tensor) -> Tensor:
        """Logits (B, K) of `predictor` (the caller sets eval mode)."""
        return self.predictor(x)[1]
