"""DyML recipe: the [H] defaults, training with CSL (or the fine-only / per-level-sum baselines) through the engine,
per-scale retrieval evaluation, a smoke case.

Data (`data`): None = the built-in world (`Config.world`); a folder with train/label.csv = the DyML layout (test:
bmk_{fine,middle,coarse} query/gallery lists, or Product's mini-bmk_all_in_one); a .csv file = `path, fine,
middle, coarse` rows; a .zip, a folder of .zip files or a folder of `<alphabet>/<character>/<file>.png` = Omniglot.
A CSV, Omniglot and the worlds are split open-set (`data.holdout` of the fine classes of every middle class go to
the test side, by `data.split_seed`), and the test side is evaluated leave-one-out at every level; `data.tuning`
moves both sides inside the training classes (`data.tuning_split`), so settings are chosen without the test classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowlabel.engine.demo import SmokeCase
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.engine.trainer import Trainer
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json
from lowlabel.methods.dyml import baselines
from lowlabel.methods.dyml import data as dyml_data
from lowlabel.methods.dyml.batches import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArrayImages,
    FileImages,
    MPerClassBatches,
    embed_images,
)
from lowlabel.methods.dyml.evaluation import LEVELS, mean_over_scales, retrieval_per_scale, top1_rows
from lowlabel.methods.dyml.model import CSLProxies, DyMLModel, EmbeddingNet, build_backbone
from lowlabel.methods.dyml.worlds import make_world
from lowlabel.metrics.retrieval import retrieval_metrics

LOSSES = ("csl", "fine_only", "level_sum")


@dataclass
class ModelConfig:
    """Network: backbone -> pool -> LayerNorm (no affine) -> Linear -> L2 normalise ([H] DyML setting)."""

    backbone: str = "resnet18"  # official: ResNet-34, not in lowlabel.nn (deviation; resnet18 | convnet)
    width: int = 64  # ResNet base width (64 = torchvision) or ConvNet first-block channels
    small_stem: bool = False  # ResNet: 3x3/1 stem without max-pool, for small images
    conv_blocks: int = 4  # ConvNet only
    dim: int = 512
    pool: str = "avg"  # [H]; the official stub: max
    layer_norm: bool = True  # [H]; the official stub: none
    in_channels: int = 0  # 0 = from the data (training writes it into the run's config.yaml)
    n_classes: list[int] = field(default_factory=lambda: [0, 0, 0])  # (fine, middle, coarse); 0 = from the data


@dataclass
class LossConfig:
    """CSL (issue 19: margins 0.25 / 0.35 / 0.45, scale 32) or a baseline through pytorch-metric-learning."""

    name: str = "csl"  # csl | fine_only | level_sum
    baseline: str = "cosface"  # fine_only / level_sum loss: cosface | multi_similarity
    margins: list[float] = field(default_factory=lambda: [0.25, 0.35, 0.45])  # CSL; level_sum CosFace per level
    scale: float = 32.0
    proxy_seed: int = 0


@dataclass
class DataConfig:
    """Sampling, transforms and splits ([H] recipe: 64 classes x 4 images, RandomResizedCrop 224 (0.16-1, 3/4-4/3),
    flip, ImageNet mean/std; test: resize 256, centre crop 224)."""

    m_per_class: int = 4
    classes_per_batch: int = 64
    image_size: int = 224
    test_resize: int = 256  # test: resize to this, centre-crop image_size; files are loaded at this size
    crop_scale: list[float] = field(default_factory=lambda: [0.16, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 4 / 3])
    flip: bool = True
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    swap_channels: bool = True  # DyML layout: reverse the stored channel order as the official cv2 loader does
    queries_in_gallery: bool = True  # DyML bmk lists: [H] drops each query's rank-1 gallery item; False: CLCD
    holdout: float = 0.25  # CSV / Omniglot / worlds: fraction of fine classes per middle class held out for testing
    split_seed: int = 0
    tuning: bool = False  # CSV / Omniglot / worlds: train and test inside the training classes (data.tuning_split)
    tuning_seed: int = 1  # which training classes the tuning split holds out
    num_workers: int = 0
    eval_batch: int = 256


@dataclass
class WorldConfig:
    """The built-in world used when no data is given (worlds.py)."""

    name: str = "shapes"  # shapes | digits
    per_class: int = 30  # shapes: images per fine class on average (72 classes)
    size: int = 32  # image side (digits: 16)
    seed: int = 0


@dataclass
class Config:
    """[H] DyML-Vehicle/Animal recipe (spec "Training procedure"): 100 epochs, SGD 0.1 Nesterov, momentum 0.9,
    weight decay 1e-4, cosine schedule (to 0 here, to 1e-6 in [H]), proxies in the same optimiser."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=100, log_every=20, checkpoint_every=500))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule="cosine"))


def with_loss(cfg: Config, spec: str) -> Config:
    """`cfg` training the model `spec`: a loss of LOSSES, for a baseline optionally with its kind after a colon
    ("level_sum:multi_similarity"); without one the config's `loss.baseline` stays."""
    name, _, kind = spec.partition(":")
    if name not in LOSSES or (kind and (name == "csl" or kind not in baselines.KINDS)):
        raise LowlabelError(f"model '{spec}': use csl, or fine_only / level_sum with an optional ':<kind>' "
                            f"({', '.join(baselines.KINDS)})")
    return dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, name=name, baseline=kind or cfg.loss.baseline))


# ------------------------------------------------------------------------------------------------ model
def build_model(cfg: Config) -> DyMLModel:
    """Embedding network + criterion of `cfg` (in_channels and n_classes must be set: training writes them). The
    network's weights come from `train.seed`, the proxies / class weights from `loss.proxy_seed` (global RNG
    untouched)."""
    m = cfg.model
    if m.in_channels < 1 or len(m.n_classes) != 3 or min(m.n_classes) < 1:
        raise LowlabelError(f"model.in_channels={m.in_channels}, model.n_classes={m.n_classes}: set from the data "
                            "by training; evaluate with the run's config.yaml")
    if cfg.loss.name not in LOSSES:
        raise LowlabelError(f"loss.name='{cfg.loss.name}': use one of {', '.join(LOSSES)}")
    with seeded(cfg.train.seed):  # the network's initialisation is train.seed's, whatever ran before
        backbone, features = build_backbone(m.backbone, in_channels=m.in_channels, width=m.width,
                                            small_stem=m.small_stem, blocks=m.conv_blocks)
        net = EmbeddingNet(backbone=backbone, in_features=features, dim=m.dim, pool=m.pool,
                           layer_norm=m.layer_norm)
    if cfg.loss.name == "csl":
        criterion: torch.nn.Module = CSLProxies(dim=m.dim, n_proxies=m.n_classes[0], seed=cfg.loss.proxy_seed)
    else:
        with seeded(cfg.loss.proxy_seed):  # pml's CosFace weights come from the global stream
            if cfg.loss.name == "fine_only":
                criterion = baselines.fine_only(cfg.loss.baseline, m.n_classes, m.dim, scale=cfg.loss.scale,
                                                margin=cfg.loss.margins[0])
            else:
                criterion = baselines.per_level_sum(cfg.loss.baseline, m.n_classes, m.dim, scale=cfg.loss.scale,
                                                    margins=cfg.loss.margins)
    return DyMLModel(net=net, criterion=criterion, margins=cfg.loss.margins, scale=cfg.loss.scale)


# ------------------------------------------------------------------------------------------------ data
@dataclass
class EvalSet:
    """One evaluation: `level` "all" = leave-one-out over `gallery` with labels (N, 3); else one level with a query
    set (None: leave-one-out) and labels (N,)."""

    level: str
    gallery: Any
    gallery_labels: np.ndarray
    query: Any = None
    query_labels: np.ndarray | None = None


def data_kind(data: Path | None) -> str:
    """"world", "dyml", "csv" or "omniglot" for a --data path (see the module docstring)."""
    if data is None:
        return "world"
    data = Path(data)
    if data.is_dir() and (data / "train" / "label.csv").is_file():
        return "dyml"
    if data.suffix.lower() == ".csv":
        return "csv"
    if data.suffix.lower() == ".zip" or data.is_dir():
        return "omniglot"
    raise LowlabelError(f"--data {data}: give a DyML folder (train/label.csv), a .csv of 'path, fine, middle, "
                        "coarse', or Omniglot zip(s) / folder")


def _omniglot(data: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Omniglot at size x size, strokes bright on black (inverted), uint8 (N, 1, size, size); labels (N, 3)."""
    sources = sorted(data.glob("*.zip")) if data.is_dir() and any(data.glob("*.zip")) else [data]
    found = dyml_data.read_omniglot(sources)
    images = 255 - torch.from_numpy(found.images).float()[:, None]
    if images.shape[-1] != size:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return images.round().clamp(0, 255).to(torch.uint8).numpy(), found.labels


def _pool(cfg: Config, data: Path | None) -> tuple[Any, np.ndarray]:
    """(image set, labels (N, 3)) of a world, CSV or Omniglot, before the open-set split."""
    kind = data_kind(data)
    if kind == "world":
        images, labels = make_world(cfg.world.name, per_class=cfg.world.per_class, size=cfg.world.size,
                                    seed=cfg.world.seed)
        return ArrayImages(images), labels
    if kind == "omniglot":
        images, labels = _omniglot(Path(data), cfg.data.test_resize)  # type: ignore[arg-type]
        return ArrayImages(images), labels
    files = dyml_data.read_hierarchy_csv(data, swap_channels=False)  # type: ignore[arg-type]
    return FileImages(files, cfg.data.test_resize), files.labels


def split(cfg: Config, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of the open-set split of `labels` (N, 3), or with `data.tuning` the tuning split inside
    its training classes (the evaluation's test classes in neither part)."""
    d = cfg.data
    if d.tuning:
        return dyml_data.tuning_split(labels, d.holdout, d.split_seed, d.tuning_seed)
    return dyml_data.open_set_split(labels, d.holdout, d.split_seed)


def _no_tuning_split(cfg: Config, data: Path | None) -> None:
    if cfg.data.tuning:
        raise LowlabelError(f"data.tuning=true needs a split of the data's own classes; --data {data} has fixed "
                            "benchmark lists: tune on a CSV of its training images instead")


def _subset(images: Any, index: np.ndarray) -> Any:
    return ArrayImages(images.images[torch.from_numpy(index)]) if isinstance(images, ArrayImages) else \
        torch.utils.data.Subset(images, index.tolist())


def load_train(cfg: Config, data: Path | None) -> tuple[Any, np.ndarray]:
    """Training images and labels (N, 3) remapped to 0..C_l - 1 per level."""
    if data_kind(data) == "dyml":
        _no_tuning_split(cfg, data)
        files = dyml_data.read_dyml_train(data, swap_channels=cfg.data.swap_channels)  # type: ignore[arg-type]
        images, labels = FileImages(files, cfg.data.test_resize), files.labels
    else:
        pool, all_labels = _pool(cfg, data)
        train_idx, _ = split(cfg, all_labels)
        images, labels = _subset(pool, train_idx), all_labels[train_idx]
    return images, dyml_data.contiguous_labels(labels)[0]


def load_test(cfg: Config, data: Path | None) -> list[EvalSet]:
    """The evaluation sets: the held-out fine classes (leave-one-out at every level), or the DyML benchmark lists."""
    kind = data_kind(data)
    if kind != "dyml":
        pool, labels = _pool(cfg, data)
        _, test_idx = split(cfg, labels)
        return [EvalSet("all", _subset(pool, test_idx), labels[test_idx])]
    _no_tuning_split(cfg, data)
    root, swap, size = Path(data), cfg.data.swap_channels, cfg.data.test_resize  # type: ignore[arg-type]
    if not (root / "bmk_fine").is_dir():
        files = dyml_data.read_dyml_product_test(root, swap_channels=swap)
        return [EvalSet("all", FileImages(files, size), files.labels)]
    sets = []
    for level in LEVELS:
        q = dyml_data.read_dyml_benchmark(root, level, "query", swap_channels=swap)
        g = dyml_data.read_dyml_benchmark(root, level, "gallery", swap_channels=swap)
        sets.append(EvalSet(level, FileImages(g, size), g.labels[:, 0], FileImages(q, size), q.labels[:, 0]))
    return sets


def resolve(cfg: Config, images: Any, labels: np.ndarray) -> Config:
    """`cfg` with model.in_channels and model.n_classes from the training data (a set value must agree)."""
    channels = int(images.channels if hasattr(images, "channels") else images.dataset.channels)
    counts = [int(c) for c in labels.max(0) + 1]
    m = cfg.model
    if (m.in_channels and m.in_channels != channels) or (max(m.n_classes) > 0 and list(m.n_classes) != counts):
        raise LowlabelError(f"the config says in_channels={m.in_channels}, n_classes={list(m.n_classes)}; the data "
                            f"gives {channels} and {counts}: resume or evaluate with the data the run was trained on")
    return dataclasses.replace(cfg, model=dataclasses.replace(m, in_channels=channels, n_classes=counts))


# ------------------------------------------------------------------------------------------------ train / eval
def step_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> dict:
    """The named losses of one (images, labels) batch: CSL's sum, or one baseline loss per level."""
    images, labels = batch
    return model(images, labels)


def make_batches(cfg: Config, images: Any, labels: np.ndarray, runtime: Runtime) -> MPerClassBatches:
    d = cfg.data
    return MPerClassBatches(images, labels, runtime, m=d.m_per_class, classes_per_batch=d.classes_per_batch,
                            size=d.image_size, scale=d.crop_scale, ratio=d.crop_ratio, flip=d.flip, mean=d.mean,
                            std=d.std, seed=cfg.train.seed, num_workers=d.num_workers)


def evaluate_model(model: torch.nn.Module, cfg: Config, sets: list[EvalSet],
                   device: torch.device | str = "cpu") -> dict[str, dict[str, float]]:
    """{level: {map, asi, r_at_1, r_at_10, r_at_20}, "overall": their means} of `model` on the evaluation sets."""
    d = cfg.data

    def emb(images: Any) -> torch.Tensor:
        return embed_images(model, images, size=d.image_size, resize=d.test_resize, mean=d.mean, std=d.std,
                            batch_size=d.eval_batch, num_workers=d.num_workers, device=device)

    if len(sets) == 1 and sets[0].level == "all":
        return retrieval_per_scale(emb(sets[0].gallery), torch.from_numpy(sets[0].gallery_labels))
    out: dict[str, dict[str, float]] = {}
    for s in sets:
        g = emb(s.gallery)
        q = emb(s.query) if s.query is not None else None
        drop = top1_rows(q, g) if q is not None and d.queries_in_gallery else None
        out[s.level] = retrieval_metrics(g, torch.from_numpy(s.gallery_labels), drop, q,
                                         None if q is None else torch.from_numpy(s.query_labels))
    out["overall"] = mean_over_scales(out)
    return out


def flat(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"fine/map": ..., "overall/asi": ...} from `evaluate_model`'s nested result."""
    return {f"{level}/{key}": value for level, values in metrics.items() for key, value in values.items()}


def train_model(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime,
                resume: bool) -> tuple[DyMLModel, Config, dict]:
    """`train`, returning the trained model and the resolved config with the summary."""
    images, labels = load_train(cfg, data)
    cfg = resolve(cfg, images, labels)
    if runtime.is_main:
        from lowlabel.engine.config import save_config

        save_config(cfg, Path(run_dir) / "config.yaml")
    model = build_model(cfg)
    if isinstance(model.criterion, CSLProxies):
        model.criterion.set_hierarchy(torch.from_numpy(labels))
    batches = make_batches(cfg, images, labels, runtime)
    trainer = Trainer(model, step_fn, config=cfg.train, optim=cfg.optim, runtime=runtime, run_dir=run_dir)
    summary = trainer.fit(batches, resume=resume)
    test = evaluate_model(model, cfg, load_test(cfg, data), runtime.device)
    summary.update({"n_train": int(labels.shape[0]), "n_classes": cfg.model.n_classes, "test": test})
    if runtime.is_main:
        write_json(Path(run_dir) / "summary.json", summary)
    return model, cfg, summary


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """Train with `cfg.loss.name` (CSL or a baseline), then evaluate the last step on the test side per level;
    run_dir gets config.yaml (with in_channels and n_classes from the data), checkpoints and summary.json."""
    return train_model(cfg, data=data, run_dir=run_dir, runtime=runtime, resume=resume)[2]


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """Per-level and overall mAP, ASI and R@1/10/20 of a checkpoint ("fine/map", ..., "overall/asi")."""
    model = load_model(build_model, cfg, checkpoint, runtime.device)
    return flat(evaluate_model(model, cfg, load_test(cfg, data), runtime.device))


def tiny_config() -> Config:
    """A 4-channel ConvNet, 8-d embedding, shapes world of 16x16 images (tests and the smoke case)."""
    return Config(model=ModelConfig(backbone="convnet", width=4, conv_blocks=2, dim=8),
                  data=DataConfig(m_per_class=2, classes_per_batch=4, image_size=16, test_resize=16,
                                  crop_scale=[0.6, 1.0], eval_batch=64),
                  world=WorldConfig(per_class=2, size=16),
                  train=TrainConfig(max_steps=4, log_every=1, checkpoint_every=2),
                  optim=OptimConfig(name="sgd", lr=0.05, momentum=0.9, nesterov=True, schedule="cosine"))


def smoke_case(runtime: Runtime) -> SmokeCase:
    """The tiny CSL model on one m-per-class batch of the shapes world (no frozen or momentum parameters)."""
    cfg = tiny_config()
    images, labels = load_train(cfg, None)
    cfg = resolve(cfg, images, labels)
    model = build_model(cfg)
    model.criterion.set_hierarchy(torch.from_numpy(labels))  # type: ignore[operator]
    batch = next(iter(make_batches(cfg, images, labels, runtime).epoch(0)))
    return SmokeCase(model=model.to(runtime.device), step_fn=step_fn, batch=batch)
