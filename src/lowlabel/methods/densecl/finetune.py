"""Fine-tuning evaluation of a pretrained backbone, as the paper transfers it: a light FCN head on the last maps, the
whole network fine-tuned on a few labelled scenes, mIoU on held-out scenes. The same recipe and budget serve every
start (random init, MoCo-v2, DenseCL); the demo and `lowlabel densecl finetune` both call `finetune_miou`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lowlabel.engine.batches import TensorBatches, embed
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.engine.trainer import Trainer
from lowlabel.errors import LowlabelError
from lowlabel.methods.densecl.data import IGNORE, Labelled
from lowlabel.methods.densecl.export import checkpoint_file, run_backbone
from lowlabel.methods.densecl.model import build_backbone
from lowlabel.methods.densecl.recipe import Config
from lowlabel.metrics.segmentation import confusion_miou
from lowlabel.nn.heads import fcn_head
from lowlabel.nn.probes import ImageNetFeatures


@dataclass
class FinetuneConfig:
    """One recipe for every start: mmsegmentation's FCN optimiser (SGD, momentum 0.9, wd 5e-4) and random flip,
    cosine instead of poly decay, sized for small CPU runs: `steps` of batch `batch_size` whatever N is; lr 0.05
    (mmsegmentation's 0.01 is for 20k iterations; chosen on the tuning worlds, docs/methods/densecl.md)."""

    steps: int = 200
    batch_size: int = 16
    lr: float = 0.05
    weight_decay: float = 5e-4
    head_channels: int = 64
    seed: int = 0


class Segmenter(nn.Module):
    """Backbone (uint8 images, ImageNet-normalised inside) + FCN head; logits bilinearly upsampled to the input."""

    def __init__(self, backbone: nn.Module, n_classes: int, *, head_channels: int = 64) -> None:
        super().__init__()
        self.features = ImageNetFeatures(backbone)
        self.head = fcn_head(backbone.feature_dim, n_classes, channels=head_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images uint8 (B, 3, H, W) -> logits (B, n_classes, H, W)."""
        logits = self.head(self.features(images))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def _flip_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
    """Per-pixel cross-entropy (IGNORE pixels left out) on the batch, each scene mirrored with probability 1/2."""
    images, masks = batch
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    masks = torch.where(flip[:, None, None], masks.flip(-1), masks)
    return {"loss_seg": F.cross_entropy(model(images), masks, ignore_index=IGNORE)}


def finetune(backbone: nn.Module, data: Labelled, *, cfg: FinetuneConfig, runtime: Runtime) -> Segmenter:
    """Fine-tune `backbone` (modified in place) and a fresh FCN head on `data`: every parameter, `cfg.steps` steps."""
    with seeded(cfg.seed):
        model = Segmenter(backbone, data.n_classes, head_channels=cfg.head_channels).to(runtime.device)
    batch_size = min(cfg.batch_size, len(data.images))
    batches = TensorBatches([data.images, data.masks], batch_size, runtime, seed=cfg.seed, drop_last=True)
    trainer = Trainer(model, _flip_step, runtime=runtime,
                      config=TrainConfig(max_steps=cfg.steps, log_every=10**9, checkpoint_every=10**9, seed=cfg.seed),
                      optim=OptimConfig(name="sgd", lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                                        schedule="cosine"))
    with torch.random.fork_rng(devices=[]):  # the trainer seeds the global generator; leave the caller's alone
        trainer.fit(batches)
    return model


def segmentation_miou(model: nn.Module, data: Labelled, *, batch_size: int = 64,
                      device: torch.device | None = None) -> float:
    """mIoU (`metrics.segmentation.confusion_miou`, confusion over the whole set) of `model`'s argmax on `data`
    (chunks moved to `device` when given), IGNORE pixels left out."""
    was_training = model.training
    model.eval()
    try:
        pred = embed(lambda x: model(x).argmax(1), data.images, batch_size=batch_size, device=device)
    finally:
        model.train(was_training)
    masks = data.masks.to(pred.device)
    keep = masks != IGNORE
    return confusion_miou(pred[keep], masks[keep], data.n_classes)


def finetune_miou(backbone: nn.Module, train: Labelled, test: Labelled, *, cfg: FinetuneConfig,
                  runtime: Runtime) -> float:
    """Fine-tune `backbone` (in place) with an FCN head on `train`, return the mIoU on `test`."""
    return segmentation_miou(finetune(backbone, train, cfg=cfg, runtime=runtime), test, device=runtime.device)


def run_config(checkpoint: Path) -> Config:
    """The config.yaml of the run that wrote `checkpoint` (a run folder or one of its checkpoints/step_*.pt)."""
    from lowlabel.engine.config import load_config

    path = checkpoint_file(checkpoint)
    run = checkpoint if checkpoint.is_dir() else path.parent.parent
    if not (run / "config.yaml").is_file():
        raise LowlabelError(f"{checkpoint}: no config.yaml in {run}; give a run folder of `lowlabel train densecl` "
                            "or a checkpoint inside one")
    return load_config(Config, run / "config.yaml", [])


def start_backbone(checkpoint: Path, *, random_init: bool = False, seed: int = 0) -> tuple[nn.Module, str]:
    """The backbone a fine-tuning starts from and its name: the query backbone of a DenseCL or MoCo-v2-mode run
    ('densecl' / 'mocov2'), or with `random_init` the same network freshly initialised by torch seed `seed`
    ('random init')."""
    cfg = run_config(checkpoint)
    m = cfg.model
    with seeded(seed):
        backbone = build_backbone(m.arch, small_stem=m.small_stem, width=m.width)
    if random_init:
        return backbone, "random init"
    backbone.load_state_dict(run_backbone(checkpoint))
    return backbone, "densecl" if cfg.loss_lambda > 0 else "mocov2"
