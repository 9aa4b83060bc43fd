"""ACR recipe: official defaults, data and source model preparation, the training step, evaluation, a smoke case.

Total loss (spec "Losses"): L = CE(labelled) + coef(t) L_cons + λ_ARC(t) L_ARC + λ_AKC(t) L_AKC, with L_cons the
FixMatch or ICT consistency (or none: plain fine-tuning), L_AKC the entropy-gated feature distance to the frozen
source model on labelled + weak unlabelled images, L_ARC the entropy-gated MMD between the labelled and unlabelled
feature tables, and linear warm-ups w·min(1, (t+1)/T).
"""

from __future__ import annotations

import dataclasses
import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lowlabel.engine.batches import embed
from lowlabel.engine.demo import SmokeCase
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.recipe import lr_factor as engine_lr_factor
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.engine.trainer import Trainer, unwrap
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json, write_text
from lowlabel.methods.acr import augment, losses, source
from lowlabel.methods.acr import data as acr_data
from lowlabel.methods.acr.model import ACRNet, SourceModel, TargetClassifier
from lowlabel.nn.mobilenet import MobileNetV2

OFFICIAL_STEPS = 10_000  # 100 epochs x 100 iterations
SSL = ("none", "fixmatch", "ict")
DATASETS = ("folders", "cub200", "indoor67", "omniglot")


@dataclass
class SyntheticConfig:
    """The shapes world used when no --data is given: 9 shape classes, source domain for the source model, target
    domain for the task (a train pool, the labelled images drawn from it, and a test set)."""

    size: int = 32  # rendered side in px
    n_source: int = 3000  # labelled source-domain scenes for the source model
    source_steps: int = 400
    source_lr: float = 0.05
    n_train: int = 1000  # target-domain training pool (all unlabelled, the labelled ones included, as official)
    n_test: int = 500
    seed: int = 0  # world seed: scenes of domain d are seeds [seed, 0|1|2] (source, target train, target test)


@dataclass
class Config:
    """Official CUB-200 defaults (`parser.py` and the README commands; spec "Losses", "Training procedure")."""

    # data
    dataset: str = "folders"  # folders: <data>/{train,test}/<class>/ | cub200 | indoor67 | omniglot (zip archives)
    labelled_per_class: int = 5  # official num_labels // C (CUB 1000 labels); split seed = train.seed
    labelled_list: str = ""  # file of labelled image keys (one per line) instead of the per-class split
    held_out_per_class: int = 5  # omniglot: the last N drawings of each character are the test set
    image_size: int = 224  # crop; images are first resized to `resize` (official Resize(256) + RandomCrop(224))
    resize: int = 256
    labelled_bs: int = 64
    unlabelled_bs: int = 64
    steps_per_epoch: int = 100  # official per_epoch_steps
    # architecture (training writes what it reads from the source model and the data)
    backbone: str = "resnet"  # resnet | mobilenet_v2
    resnet_layers: list[int] = field(default_factory=lambda: [3, 4, 6, 3])  # ResNet-50
    bottleneck: bool = True
    width: int = 64
    small_stem: bool = False
    num_classes: int = 0  # from the data
    source: str = ""  # weights file, 'imagenet-mobilenet_v2', or '' (built-in world: pretrained on its source domain)
    source_classes: int = 1000
    imprint: bool = True
    # AKC and ARC
    lambda_akc: float = 1.0  # README value to switch AKC on (parser default 0)
    lambda_arc: float = 50.0
    kd_threshold: float = losses.ENTROPY_THRESHOLD
    mmd_threshold: float = losses.ENTROPY_THRESHOLD
    akc_gate_classes: int = losses.SOURCE_CLASSES  # C in the AKC gate H <= τ ln C; 0 = the source head's width
    akc_scale: float = losses.AKC_SCALE
    table_size: int = losses.TABLE_SIZE
    arc_start: int = losses.ARC_START
    arc_min_rows: int = losses.ARC_MIN_ROWS
    reg_warmup: int = losses.REG_WARMUP  # iterations
    # semi-supervised term
    ssl: str = "none"  # none | fixmatch | ict (the official "MixMatch")
    fixmatch_threshold: float = losses.FIXMATCH_THRESHOLD
    fixmatch_coef: float = 0.5
    ict_coef: float = 500.0
    ict_alpha: float = losses.ICT_ALPHA
    ict_warmup: float = 0.4  # fraction of the run (official 4,000 of 10,000 iterations)
    ema: str = "auto"  # auto (on with fixmatch/ict, as the README commands) | on | off
    ema_factor: float = losses.EMA_FACTOR
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=OFFICIAL_STEPS, log_every=50, checkpoint_every=1000, seed=1))
    # SGD 0.01 Nesterov, wd 1e-4 (not on BatchNorm and biases), lr max(0, cos(π·7.9/16·t/T)) as officially
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="sgd", lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule="truncated_cosine",
        cycles=7.9 / 16))


def check(cfg: Config) -> None:
    """Errors for settings that cannot run."""
    if cfg.ssl not in SSL:
        raise LowlabelError(f"ssl='{cfg.ssl}': use one of {', '.join(SSL)}")
    if cfg.ema not in ("auto", "on", "off"):
        raise LowlabelError(f"ema='{cfg.ema}': use auto, on or off")
    if cfg.dataset not in DATASETS:
        raise LowlabelError(f"dataset='{cfg.dataset}': use one of {', '.join(DATASETS)}")
    if cfg.backbone not in ("resnet", "mobilenet_v2"):
        raise LowlabelError(f"backbone='{cfg.backbone}': use resnet or mobilenet_v2")
    if cfg.image_size > cfg.resize:
        raise LowlabelError(f"image_size={cfg.image_size} is larger than resize={cfg.resize}")


def uses_ema(cfg: Config) -> bool:
    return cfg.ema == "on" or (cfg.ema == "auto" and cfg.ssl != "none")


def _backbone(cfg: Config) -> nn.Module:
    if cfg.backbone == "mobilenet_v2":
        return MobileNetV2(num_classes=0)
    return source.small_resnet(layers=list(cfg.resnet_layers), width=cfg.width, bottleneck=cfg.bottleneck,
                               small_stem=cfg.small_stem)


def build_model(cfg: Config) -> ACRNet:
    """The ACRNet of `cfg` with random weights (training loads the source model into it), built under
    `train.seed` without touching the global generator."""
    check(cfg)
    if cfg.num_classes < 2:
        raise LowlabelError(f"num_classes={cfg.num_classes}: set by training from the data (at least 2)")
    with seeded(cfg.train.seed):
        backbone = _backbone(cfg)
        student = TargetClassifier(backbone=backbone, num_classes=cfg.num_classes)
        src = None
        if cfg.lambda_akc > 0:
            src = SourceModel(backbone=_backbone(cfg), head=nn.Linear(int(backbone.feature_dim), cfg.source_classes))
    return ACRNet(student=student, source=src, teacher=uses_ema(cfg), average_buffers=cfg.ssl == "ict",
                  ema_factor=cfg.ema_factor, table_size=cfg.table_size if cfg.lambda_arc > 0 else 0)


# ------------------------------------------------------------------------------------------------------- data
@dataclass
class Prepared:
    """Images (uint8 (N, 3, resize, resize)) and labels of one run, and the data's class names."""

    labelled: torch.Tensor
    labels: torch.Tensor
    unlabelled: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    labelled_names: list[str]


def _labelled_indices(cfg: Config, train_set: acr_data.ImageSet | None, labels: np.ndarray) -> np.ndarray:
    if cfg.labelled_list:
        if train_set is None:
            raise LowlabelError("labelled_list needs --data (the built-in world has no image keys)")
        return acr_data.read_labelled_list(cfg.labelled_list, train_set)
    return acr_data.per_class_split(labels, cfg.labelled_per_class, cfg.train.seed)[0]


def load_data(cfg: Config, root: Path | None) -> Prepared:
    """The run's images: the shapes world (root None) or the dataset at `root` (layout `cfg.dataset`). The
    unlabelled set is the whole training split, labelled images included (official `num_unlabels` = -1)."""
    if root is None:
        s = cfg.synthetic
        train_x, train_y = acr_data.shapes_images(s.n_train, seed=s.seed * 3 + 1, domain="target", size=s.size,
                                              side=cfg.resize)
        test_x, test_y = acr_data.shapes_images(s.n_test, seed=s.seed * 3 + 2, domain="target", size=s.size,
                                            side=cfg.resize)
        chosen = _labelled_indices(cfg, None, train_y.numpy())
        from lowlabel.data.synth.shapes import SHAPES

        return Prepared(train_x[chosen], train_y[chosen], train_x, test_x, test_y, list(SHAPES),
                        [f"scene{int(i)}" for i in chosen])
    root = Path(root)
    if cfg.dataset == "omniglot":
        archives = sorted(glob.glob(str(root / "*.zip"))) if root.is_dir() else [str(root)]
        if not archives:
            raise LowlabelError(f"{root}: no .zip archives (Omniglot images_background*.zip)")
        everything = acr_data.read_zip_folders(archives)
        train_idx, test_idx = acr_data.held_out_split(everything.labels, cfg.held_out_per_class)
        splits = {"train": everything.subset(train_idx), "test": everything.subset(test_idx)}
    else:
        reader = {"folders": acr_data.read_split_folders, "cub200": acr_data.read_cub200,
                  "indoor67": acr_data.read_indoor67}
        splits = reader[cfg.dataset](root)
    train_set, test_set = splits["train"], splits["test"]
    chosen = _labelled_indices(cfg, train_set, train_set.labels)
    train_x = acr_data.image_tensor(train_set, cfg.resize)
    return Prepared(train_x[chosen], torch.from_numpy(train_set.labels[chosen]), train_x,
                    acr_data.image_tensor(test_set, cfg.resize), torch.from_numpy(test_set.labels),
                    list(train_set.classes), [train_set.names[int(i)] for i in chosen])


def resolve_source(cfg: Config, root: Path | None, run_dir: Path, runtime: Runtime) -> tuple[Config, Path | str]:
    """The source model's weights (a file, or 'imagenet-mobilenet_v2') and `cfg` with the architecture they fix."""
    if cfg.source == source.IMAGENET_MOBILENET:
        return dataclasses.replace(cfg, backbone="mobilenet_v2", source_classes=1000), cfg.source
    if cfg.source:
        path: Path | str = Path(cfg.source)
    elif root is None:
        s = cfg.synthetic
        path = run_dir / "source.pt"
        if not path.is_file():
            source.pretrain_shapes(path, layers=list(cfg.resnet_layers), width=cfg.width, small_stem=cfg.small_stem,
                                   crop=cfg.image_size,
                                   size=s.size, side=cfg.resize, n=s.n_source, steps=s.source_steps,
                                   lr=s.source_lr, seed=s.seed * 3, runtime=runtime)
    else:
        raise LowlabelError("no source model: set source= to a weights file (torchvision-format ResNet or "
                            "MobileNetV2) or to 'imagenet-mobilenet_v2'")
    backbone, head = source.from_file(path)
    source.check_head(head, cfg.lambda_akc, str(path))
    arch: dict[str, Any] = {"source_classes": head.out_features if head is not None else cfg.source_classes}
    if isinstance(backbone, MobileNetV2):
        arch["backbone"] = "mobilenet_v2"
    else:
        stages = [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)]
        arch.update(backbone="resnet", resnet_layers=stages, width=int(backbone.conv1.out_channels),
                    bottleneck=hasattr(backbone.layer1[0], "conv3"), small_stem=backbone.conv1.kernel_size[0] == 3)
    return dataclasses.replace(cfg, **arch), path


def load_source_weights(model: ACRNet, path: Path | str) -> None:
    """Copy the source backbone into the student (and teacher), backbone + head into the frozen source model."""
    backbone, head = source.imagenet_mobilenet() if path == source.IMAGENET_MOBILENET else source.from_file(path)
    model.student.backbone.load_state_dict(backbone.state_dict())
    if model.source is not None and head is not None:
        model.source.backbone.load_state_dict(backbone.state_dict())
        model.source.head.load_state_dict(head.state_dict())
    if model.teacher is not None:
        model.teacher.module.load_state_dict(model.student.state_dict())


def imprint(model: ACRNet, prepared: Prepared, cfg: Config, device: torch.device) -> None:
    """Weight imprinting on the labelled images (centre view, eval-mode BatchNorm; official `imprint`)."""
    views = augment.center(prepared.labelled, cfg.image_size)
    feats = embed(lambda x: model.student.backbone.forward_features(x).mean(dim=(2, 3)), views, batch_size=256,
                  device=device)
    model.student.imprint_(feats, prepared.labels.to(device))
    if model.teacher is not None:
        model.teacher.module.load_state_dict(model.student.state_dict())


# ------------------------------------------------------------------------------------------------------- step
def param_groups(model: ACRNet, weight_decay: float) -> list[dict[str, Any]]:
    """The student's parameters: weight decay on conv/linear weights, none on BatchNorm and biases (official rule
    by name, 'bn'/'bias'; by module type here, see Deviations)."""
    decay, no_decay = [], []
    for module in model.student.modules():
        for name, p in module.named_parameters(recurse=False):
            norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
            (no_decay if norm or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_step_fn(cfg: Config, total_steps: int) -> Any:
    """step_fn(model, (x_l uint8, y_l, x_u uint8), step) -> (named losses, lr factor for the EMA weight decay)."""
    size = cfg.image_size
    ict_warmup = round(cfg.ict_warmup * total_steps)

    def step_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], step: int) -> Any:
        x_l, y_l, x_u = batch
        net: ACRNet = unwrap(model)
        bl, bu = len(x_l), len(x_u)
        views = [augment.weak(x_l, size), augment.weak(x_u, size)]
        if cfg.ssl == "fixmatch":
            views.append(augment.strong(x_u, size))
        inputs = torch.cat(views)
        mixed = mixed_targets = None
        if cfg.ssl == "ict":
            teacher = net.predictor
            was = teacher.training
            teacher.eval()
            with torch.no_grad():
                t_logits = teacher(views[1])[1]
            teacher.train(was)
            lam, perm = losses.sample_mixup(bu, cfg.ict_alpha)
            mixed, mixed_targets = losses.ict_mixup(views[1], t_logits, lam, perm)
        fmap, logits, mixed_logits = model(inputs, mixed)
        logits_l, logits_u = logits[:bl], logits[bl:bl + bu]
        out = {"ce": F.cross_entropy(logits_l, y_l)}
        if cfg.ssl == "fixmatch":
            coef = cfg.fixmatch_coef
            out["ssl"] = coef * losses.fixmatch_loss(logits[bl + bu:], logits_u, cfg.fixmatch_threshold)
        elif cfg.ssl == "ict":
            coef = losses.warmup_weight(cfg.ict_coef, step, ict_warmup)
            out["ssl"] = coef * losses.mean_squared_consistency(mixed_logits, mixed_targets)
        if net.source is not None:
            s_fmap, s_logits = net.source(inputs[:bl + bu])
            gate = cfg.akc_gate_classes or s_logits.shape[1]
            mask = losses.entropy_mask(s_logits, cfg.kd_threshold, gate)
            weight = losses.warmup_weight(cfg.lambda_akc, step, cfg.reg_warmup)
            out["akc"] = weight * losses.akc_loss(fmap[:bl + bu], s_fmap, mask, cfg.akc_scale)
        if net.tables is not None:
            m_l = losses.entropy_mask(logits_l, cfg.mmd_threshold, cfg.num_classes)
            m_u = losses.entropy_mask(logits_u, cfg.mmd_threshold, cfg.num_classes)
            tables = net.tables.update(fmap[:bl], fmap[bl:bl + bu], m_l, m_u)
            arc = fmap.new_zeros(())
            if tables is not None and losses.arc_active(step, len(tables[0]), cfg.arc_start, cfg.arc_min_rows):
                arc = losses.warmup_weight(cfg.lambda_arc, step, cfg.reg_warmup) * losses.mmd_loss(*tables)
            out["arc"] = arc
        return out, engine_lr_factor(step, total_steps, cfg.optim)

    return step_fn


def make_after_step(cfg: Config) -> Any:
    """EMA-teacher update after each optimiser step, with the official extra decay wd·lr on its conv/linear weights
    for FixMatch (`ema_apply_wd`)."""

    def after_step(model: nn.Module, lr_factor: float, step: int) -> None:
        net: ACRNet = unwrap(model)
        if net.teacher is not None:
            wd = cfg.optim.weight_decay * cfg.optim.lr * lr_factor if cfg.ssl == "fixmatch" else 0.0
            net.teacher.update(net.student, weight_decay=wd)

    return after_step


# ------------------------------------------------------------------------------------------------------- runs
@torch.no_grad()
def accuracy(model: ACRNet, images: torch.Tensor, labels: torch.Tensor, cfg: Config,
             device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of `model.predictor` (EMA teacher if any) on the centre views of uint8 `images`."""
    predictor = model.predictor
    logits = embed(lambda x: predictor(augment.center(x, cfg.image_size))[1], images, batch_size=256,
                   device=device)
    return float((logits.argmax(1).cpu() == labels).float().mean())


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """Fine-tune the source model on the target data with the configured regularisers; summary.json gets the test
    accuracy of the last iteration (EMA teacher when there is one) and the config it ran with."""
    return train_model(cfg, data=data, run_dir=run_dir, runtime=runtime, resume=resume)[1]


def train_model(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool,
                prepared: Prepared | None = None) -> tuple[ACRNet, dict]:
    """`train`, returning the model; `prepared` reuses images already loaded for this config's split."""
    check(cfg)
    run_dir = Path(run_dir)
    cfg, weights = resolve_source(cfg, data, run_dir, runtime)
    prepared = prepared or load_data(cfg, data)
    cfg = dataclasses.replace(cfg, num_classes=len(prepared.classes))
    model = build_model(cfg)
    load_source_weights(model, weights)
    if cfg.imprint:
        imprint(model.to(runtime.device), prepared, cfg, runtime.device)
    batches = data_batches(cfg, prepared, runtime)
    total = cfg.train.total_steps(batches.steps_per_epoch)

    def eval_fn(m: nn.Module, _: int) -> dict[str, float]:
        return {"accuracy": accuracy(unwrap(m), prepared.test, prepared.test_labels, cfg, runtime.device)}

    trainer = Trainer(model, make_step_fn(cfg, total), config=cfg.train, optim=cfg.optim, runtime=runtime,
                      params=param_groups(model, cfg.optim.weight_decay), run_dir=run_dir, eval_fn=eval_fn,
                      after_step=make_after_step(cfg))
    summary = trainer.fit(batches, resume=resume)
    summary.update({"test_accuracy": trainer.last_eval.get("accuracy") if trainer.last_eval else
                    eval_fn(model.eval(), total)["accuracy"], "n_labelled": len(prepared.labelled),
                    "n_unlabelled": len(prepared.unlabelled), "n_test": len(prepared.test),
                    "classes": len(prepared.classes), "config": dataclasses.asdict(cfg)})
    if runtime.is_main:
        write_run_files(run_dir, cfg, prepared)
        write_json(run_dir / "summary.json", summary)
    return model, summary


def data_batches(cfg: Config, prepared: Prepared, runtime: Runtime) -> acr_data.TwoStreams:
    """The labelled and unlabelled streams of the run, this rank's share of each step under DDP."""
    return acr_data.TwoStreams(prepared.labelled, prepared.labels, prepared.unlabelled, labelled_bs=cfg.labelled_bs,
                               unlabelled_bs=cfg.unlabelled_bs, steps_per_epoch=cfg.steps_per_epoch,
                               seed=cfg.train.seed, rank=runtime.rank, world_size=runtime.world_size)


def write_run_files(run_dir: Path, cfg: Config, prepared: Prepared) -> None:
    """resolved.yaml (the config with architecture and classes filled in, for eval/predict), labelled.txt (the
    labelled subset, one key per line, readable as `labelled_list`) and classes.txt (class names in index order)."""
    from lowlabel.engine.config import save_config

    save_config(cfg, run_dir / "resolved.yaml")
    write_text(run_dir / "labelled.txt", "".join(f"{n}\n" for n in prepared.labelled_names))
    write_text(run_dir / "classes.txt", "".join(f"{c}\n" for c in prepared.classes))


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """Test accuracy of a checkpoint (the config must be the one the run saved: architecture and classes)."""
    model = load_model(build_model, cfg, checkpoint, runtime.device)
    prepared = load_data(cfg, data)
    return {"accuracy": accuracy(model, prepared.test, prepared.test_labels, cfg, runtime.device)}


def smoke_case(runtime: Runtime) -> SmokeCase:
    """A width-4 ResNet on 16 px shapes, FixMatch + AKC + ARC with an EMA teacher, one 8 + 8 batch (ARC active)."""
    cfg = Config(backbone="resnet", resnet_layers=[1, 1, 1, 1], bottleneck=False, width=4, small_stem=True,
                 num_classes=9, source_classes=9, image_size=16, resize=18, ssl="fixmatch", akc_gate_classes=0,
                 mmd_threshold=1.0, arc_start=-1, arc_min_rows=0, reg_warmup=1)
    x, y = acr_data.shapes_images(8, seed=0, domain="target", size=16, side=18)
    model = build_model(cfg).to(runtime.device)
    return SmokeCase(model=model, step_fn=make_step_fn(cfg, 100), batch=(x, y, x.flip(0)),
                     frozen_prefixes=("source.", "teacher."))

