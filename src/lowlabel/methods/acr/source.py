"""Where ACR's source model comes from: the ImageNet MobileNetV2, a user's torchvision-format file, or (built-in world)
a small ResNet pretrained with labels on the shapes world's source domain.

Each returns (backbone with `forward_features` and `feature_dim`, classifier head or None). The backbone's weights
initialise the target model; backbone and head together are the frozen source model of AKC.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.engine.trainer import Trainer
from lowlabel.errors import LowlabelError
from lowlabel.methods.acr.augment import weak
from lowlabel.methods.acr.data import shapes_images
from lowlabel.methods.acr.model import backbone_from_state, read_state
from lowlabel.nn.resnet import BasicBlock, Bottleneck, ResNet

IMAGENET_MOBILENET = "imagenet-mobilenet_v2"


def imagenet_mobilenet() -> tuple[nn.Module, nn.Linear]:
    """The offline ImageNet MobileNetV2 (`lowlabel.nn.mobilenet`) as backbone and its 1000-way Linear head."""
    from lowlabel.nn.mobilenet import mobilenet_v2

    net = mobilenet_v2(pretrained=True)
    head = net.classifier[1]
    net.classifier = nn.Identity()
    net.num_classes = 0
    return net, head


def from_file(path: str | Path) -> tuple[nn.Module, nn.Linear | None]:
    """Backbone and head of a torchvision-format ResNet or MobileNetV2 file (.pth/.pt/.safetensors, a lowlabel
    backbone export, or a training checkpoint with a 'model'/'state_dict' entry)."""
    return backbone_from_state(read_state(path), source=str(path))


def small_resnet(*, layers: list[int], width: int, bottleneck: bool = False, small_stem: bool = True,
                 num_classes: int = 0) -> ResNet:
    """A narrow lowlabel ResNet (torchvision key names) for CPU demos."""
    block = Bottleneck if bottleneck else BasicBlock
    return ResNet(block, tuple(layers), num_classes=num_classes, small_stem=small_stem, width=width)


def pretrain_shapes(path: Path, *, layers: list[int], width: int, small_stem: bool, crop: int, size: int,
                    side: int, n: int, steps: int, lr: float, seed: int, runtime: Runtime) -> Path:
    """Pretrain a small ResNet with labels on `n` one-object scenes of the shapes source domain (9 shape classes;
    weak views, SGD with Nesterov momentum, cosine lr) and save it as a torchvision-format state dict with `fc`."""
    images, labels = shapes_images(n, seed=seed, domain="source", size=size, side=side)
    with seeded(seed):
        net = small_resnet(layers=layers, width=width, small_stem=small_stem, num_classes=9)

    class Batches:
        steps_per_epoch = max(1, n // 64)

        def epoch(self, epoch: int, start: int = 0):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            for b in range(start, self.steps_per_epoch):
                idx = order[b * 64:(b + 1) * 64]
                yield images[idx], labels[idx]

    def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"ce": F.cross_entropy(model(weak(x, crop)), y)}

    trainer = Trainer(net, step, config=TrainConfig(max_steps=steps, log_every=10**9, seed=seed),
                      optim=OptimConfig(lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine"),
                      runtime=runtime)
    trainer.fit(Batches())
    return ckpt.atomic_save({k: v.cpu() for k, v in net.state_dict().items()}, path)


def check_head(head: nn.Linear | None, lambda_akc: float, source: str) -> None:
    """AKC's gate needs the source model's class logits."""
    if head is None and lambda_akc > 0:
        raise LowlabelError(f"{source}: has no classifier; AKC's entropy gate needs the source model's class logits: "
                            "give the checkpoint with its head, or set lambda_akc=0")
