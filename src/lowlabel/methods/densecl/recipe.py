"""DenseCL recipe: official defaults, training on an image folder or the shapes world, evaluation, smoke case."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from lowlabel.data.transforms import moco_v2, two_views
from lowlabel.engine.batches import DatasetBatches, TensorBatches
from lowlabel.engine.demo import SmokeCase
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.runtime import Runtime
from lowlabel.engine.trainer import Trainer, unwrap
from lowlabel.files import write_text
from lowlabel.methods.densecl.data import ImageFolder, ShapesImages, probe_data, scan_folder, shapes_images
from lowlabel.methods.densecl.model import DenseCL, Keys
from lowlabel.nn.probes import backbone_maps, class_probe, segmentation_probe


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    small_stem: bool = False
    width: int = 64  # base width of the ResNet (stages w, 2w, 4w, 8w); 64 = torchvision's, smaller for CPU demos
    hid_dim: int = 2048
    out_dim: int = 128
    num_grid: Optional[int] = None  # noqa: UP045 - OmegaConf needs Optional


@dataclass
class AugConfig:
    image_size: int = 224
    load_size: int = 256  # folder images are resized (shorter side) and centre-cropped to this before augmentation
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.4, 0.1])
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    blur_p: float = 0.5
    flip_p: float = 0.5


@dataclass
class Config:
    """Defaults = the official ImageNet config: batch 32 per GPU (256 on 8 GPUs), 200 epochs, SGD lr 0.03 for a
    global batch of 256 (scaled linearly with the actual global batch), momentum 0.9, weight decay 1e-4, cosine to 0,
    no warm-up."""

    model: ModelConfig = field(default_factory=ModelConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    queue_size: int = 65536
    temperature: float = 0.2
    loss_lambda: float = 0.5  # 0 = MoCo-v2 mode: the dense branch is not built
    lambda_warmup_steps: int = 0  # lambda = 0 before this step (DenseCLWarmupHook; 0 = off as in shipped configs)
    momentum: float = 0.999  # of the key encoder (EMA); the optimiser's is optim.momentum
    batch_size: int = 32  # per process
    skip_bad: bool = False
    num_workers: int = 4
    synthetic_images: int = 4096  # shapes-world images when no --data is given
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=200, max_steps=0, log_every=20,
                                                                   checkpoint_every=1000))
    # optim.lr is for a global batch of 256: training scales it by batch_size * world_size / 256 (`lr_scale`)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="sgd", lr=0.03, momentum=0.9,
                                                                   weight_decay=1e-4, schedule="cosine"))


def lambda_at(step: int, lam: float, warmup_steps: int) -> float:
    """The dense-loss weight at `step`: 0 before `warmup_steps`, then `lam` (the official warm-up hook)."""
    return 0.0 if step < warmup_steps else lam


def build_model(cfg: Config) -> DenseCL:
    """DenseCL (or MoCo-v2 when loss_lambda == 0) from the config."""
    m = cfg.model
    return DenseCL(arch=m.arch, small_stem=m.small_stem, width=m.width, hid_dim=m.hid_dim, out_dim=m.out_dim,
                   num_grid=m.num_grid, queue_size=cfg.queue_size, temperature=cfg.temperature,
                   dense=cfg.loss_lambda > 0)


def build_augment(cfg: Config) -> torch.nn.Module:
    """The MoCo-v2 view pipeline of the config."""
    a = cfg.aug
    return moco_v2(a.image_size, crop_scale=a.crop_scale, jitter=a.jitter, jitter_p=a.jitter_p,
                   grayscale_p=a.grayscale_p, blur_sigma=a.blur_sigma, blur_p=a.blur_p, flip_p=a.flip_p)


def make_step_fn(cfg: Config, augment: torch.nn.Module) -> Any:
    """step_fn(model, batch, step) -> (losses, keys): two views on the device, then the model's forward."""

    def step_fn(model: torch.nn.Module, batch: Any, step: int) -> tuple[dict[str, torch.Tensor], Keys]:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        view_q, view_k = two_views(augment, images)
        lam = lambda_at(step, cfg.loss_lambda, cfg.lambda_warmup_steps)
        return model(view_q, view_k, lam=lam, momentum=cfg.momentum)

    return step_fn


def lr_scale(cfg: Config, runtime: Runtime) -> float:
    """The linear scaling rule of the official code: optim.lr is for a global batch of 256."""
    return cfg.batch_size * runtime.world_size / 256


def enqueue_keys(model: torch.nn.Module, keys: Keys, step: int) -> None:
    """after_step: enqueue the step's keys once the optimizer has stepped."""
    unwrap(model).enqueue(keys)


def _batches(cfg: Config, data: Path | None, runtime: Runtime, log: list[str]) -> Any:
    if data is None:
        size = min(max(cfg.aug.load_size, 16), 224)
        images = shapes_images(cfg.synthetic_images, size=size, seed=cfg.train.seed).images
        return TensorBatches([images], cfg.batch_size, runtime, seed=cfg.train.seed, drop_last=True)
    scan = scan_folder(data, skip_bad=cfg.skip_bad)
    log.append(f"{len(scan.paths)} images in {data}; skipped {len(scan.bad)} unreadable")
    log += [f"skipped {path}: {reason}" for path, reason in scan.bad]
    return DatasetBatches(ImageFolder(scan.paths, cfg.aug.load_size), cfg.batch_size, runtime,
                          seed=cfg.train.seed, num_workers=cfg.num_workers)


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool,
          model: DenseCL | None = None) -> dict:
    """Pretrain on `data` (an image folder, recursive) or the shapes world; returns the trainer's summary.

    `model` (built by `build_model(cfg)`) lets a caller keep the trained module; by default one is built here."""
    log: list[str] = []
    batches = _batches(cfg, data, runtime, log)
    if runtime.is_main:
        for line in log[:1] + log[1:21]:
            print(line, flush=True)
        if len(log) > 1:
            write_text(run_dir / "skipped_images.txt", "\n".join(log[1:]) + "\n")
    model = model if model is not None else build_model(cfg)
    trainer = Trainer(model, make_step_fn(cfg, build_augment(cfg).to(runtime.device)), config=cfg.train,
                      optim=cfg.optim, runtime=runtime, params=model.encoder_q.parameters(),
                      lr_scale=lr_scale(cfg, runtime), run_dir=run_dir, after_step=enqueue_keys)
    summary = trainer.fit(batches, resume=resume)
    return {**summary, "skipped_images": max(len(log) - 1, 0), "mode": "densecl" if cfg.loss_lambda > 0 else "mocov2"}


def probe_scores(backbone: torch.nn.Module, *, size: int, seed: int, device: torch.device) -> dict[str, float]:
    """Frozen-backbone probes on the shapes world (`data.probe_data`, `lowlabel.nn.probes`): {'miou': per-pixel
    segmentation of multi-object scenes, 'class_acc': shape of the object in one-object scenes}."""
    seg_train, seg_test = probe_data(size, seed)
    cls_train, cls_test = probe_data(size, seed, single_object=True)

    def maps(part: ShapesImages) -> torch.Tensor:
        return backbone_maps(backbone, part.images.to(device))

    miou = segmentation_probe(maps(seg_train), seg_train.semantic.to(device), maps(seg_test),
                              seg_test.semantic.to(device), seg_train.n_seg_classes, seed=seed)
    acc = class_probe(maps(cls_train), cls_train.shape.to(device), maps(cls_test), cls_test.shape.to(device),
                      cls_train.n_seg_classes - 1)
    return {"miou": miou, "class_acc": acc}


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """Shapes world (no data): frozen linear probes, mIoU and class accuracy. Folder: the mean losses over up to 20
    batches with the key encoder held fixed (momentum 1) and the queues untouched."""
    model = load_model(build_model, cfg, checkpoint, runtime.device)
    if data is None:
        size = min(max(cfg.aug.load_size, 16), 224)
        return probe_scores(model.encoder_q.backbone, size=size, seed=cfg.train.seed + 1, device=runtime.device)
    batches = _batches(cfg, data, runtime, [])
    augment = build_augment(cfg).to(runtime.device)
    totals: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        for batch in batches.epoch(0):
            view_q, view_k = two_views(augment, batch.to(runtime.device))
            losses, _ = model(view_q, view_k, lam=cfg.loss_lambda, momentum=1.0)
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value)
            n += 1
            if n == 20:
                break
    return {name: value / n for name, value in totals.items()}


def smoke_case(runtime: Runtime) -> SmokeCase:
    """A tiny DenseCL (ResNet-18 at width 8, 16 px, queue 64) with one batch of 4 random images."""
    cfg = Config(model=ModelConfig(arch="resnet18", small_stem=True, width=8, hid_dim=32, out_dim=16),
                 aug=AugConfig(image_size=16, blur_sigma=[0.1, 0.5]), queue_size=64)
    batch = (torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, device=runtime.device),)
    return SmokeCase(build_model(cfg).to(runtime.device), make_step_fn(cfg, build_augment(cfg)), batch,
                     frozen_prefixes=("encoder_k.",))
