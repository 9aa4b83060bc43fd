"""FDRL recipe: the paper's defaults, training through the engine, evaluation, a smoke case.

Total loss (spec "Losses"): L = L_cls + λ1 L_C + λ2 L_B + λ3 L_D for the FDRL head (`losses.fdrl_loss`); the
baselines use L_cls alone (`head="linear"`) or L_cls + λ L_centre on the pooled feature (`head="centre"`).
The model is evaluated once, after the last step (nothing is selected on the test split).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lowlabel.data.synth.faces import EXPRESSION_STYLES
from lowlabel.engine.batches import TensorBatches
from lowlabel.engine.demo import SmokeCase
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.engine.trainer import Trainer, unwrap
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json
from lowlabel.methods.fdrl import data as fdata
from lowlabel.methods.fdrl import losses
from lowlabel.methods.fdrl.model import (
    FDRL,
    FDRLHead,
    FDRLOutput,
    LinearHead,
    MLPHead,
    fdrl_head_size,
    matched_mlp_width,
)

BACKBONES: tuple[str, ...] = ("resnet18", "mobilenet_v2", "dlib")
HEADS: tuple[str, ...] = ("fdrl", "linear", "centre", "mlp")
OFFICIAL_EPOCHS = 40
DLIB_DIM = 128


@dataclass
class WorldConfig:
    """The faces world used when no --data is given: identities disjoint between train and test (the test world is
    drawn with seed + 10,000). `intensity_range`, `degraded` and `expressions` are FDRL's adapter options
    (`data.faces_world`)."""

    train_identities: int = 150
    test_identities: int = 75
    images_per_identity: int = 20
    size: int = 48
    intensity_range: list[float] = field(default_factory=lambda: [0.6, 1.0])
    degraded: bool = False
    expressions: str = "classic"  # classic | action_units (sums of shared facial action units)
    seed: int = 0


@dataclass
class Config:
    """Defaults: the paper's setting as the unofficial re-implementation carries it (spec "Training procedure")."""

    backbone: str = "resnet18"  # resnet18 | mobilenet_v2 | dlib (frozen 128-d dlib face embedding, cached)
    pretrained: str = ""  # "" (random init) | "imagenet" (mobilenet_v2) | a torchvision-layout .pth (resnet18)
    width: int = 64  # ResNet-18 base width (64 = the standard network)
    image_size: int = 224
    head: str = "fdrl"  # fdrl | linear (baseline) | centre (baseline: linear head + centre loss) | mlp (baseline)
    num_classes: int = 7  # set from the data by training
    classes: list[str] = field(default_factory=list)  # class names, set from the data by training
    num_latent: int = 9  # M
    latent_dim: int = 128  # D
    relation: str = "tanh_distance"  # Inter-RM relation function (model.RELATIONS)
    delta: float = 0.5  # δ of y = δ f + (1 - δ) f̂
    skip: str = "intra"  # "intra": the paper's δ f; "message": the unofficial δ g
    epn_init_scale: float = 1.0  # EPN weight init x this (1 = PyTorch's default init, as the unofficial code)
    lambda_c: float = 1e-4  # λ1, compactness
    lambda_b: float = 1.0  # λ2, balance
    lambda_d: float = 1e-4  # λ3, distribution
    balance: str = "normalised"  # normalised | raw (the literal L_B on α; collapses with λ2 = 1)
    lambda_centre: float = 1e-3  # the centre baseline's weight
    mlp_layers: int = 3  # the MLP baseline's hidden layers (FDRL's head: FDN, Intra-RM gate, Inter-RM message)
    mlp_hidden: int = 0  # the MLP baseline's hidden width; 0: the FDRL head's parameter count (`matched_mlp_width`)
    batch_size: int = 64
    flip: bool = True  # random horizontal flip (the paper's only augmentation)
    train_per_class: int = 0  # >0: a fixed subset of this many training images per class (subset_seed)
    subset_seed: int = 0
    align: bool = False  # detect and align faces in raw photos with dlib first (cached)
    cache_dir: str = ""  # alignment / embedding cache ("" = ~/.cache/lowlabel/fdrl)
    eval_batch: int = 256
    world: WorldConfig = field(default_factory=WorldConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=OFFICIAL_EPOCHS, log_every=20,
                                                                   checkpoint_every=500))
    # Adam 1e-4, betas (0.5, 0.999), lr x0.1 at epochs 10, 18, 25, 32 of 40 (fractions of the run)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="adam", lr=1e-4, betas=[0.5, 0.999], schedule="step",
        milestones=[10 / OFFICIAL_EPOCHS, 18 / OFFICIAL_EPOCHS, 25 / OFFICIAL_EPOCHS, 32 / OFFICIAL_EPOCHS],
        gamma=0.1))


@dataclass
class Split:
    """One split in memory: inputs uint8 images (N, 3, S, S) or float32 features (N, P) (dlib backbone), labels
    (N,) int64, class names."""

    inputs: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]


def check_config(cfg: Config) -> None:
    """LowlabelError naming the first bad choice of `cfg`."""
    if cfg.backbone not in BACKBONES:
        raise LowlabelError(f"backbone='{cfg.backbone}': use one of {', '.join(BACKBONES)}")
    if cfg.head not in HEADS:
        raise LowlabelError(f"head='{cfg.head}': use one of {', '.join(HEADS)}")
    if cfg.world.expressions not in EXPRESSION_STYLES:
        raise LowlabelError(f"world.expressions='{cfg.world.expressions}': use one of {', '.join(EXPRESSION_STYLES)}")
    if cfg.balance not in losses.BALANCE_MODES:
        raise LowlabelError(f"balance='{cfg.balance}': use one of {', '.join(losses.BALANCE_MODES)}")
    if cfg.pretrained == "imagenet" and cfg.backbone != "mobilenet_v2":
        raise LowlabelError("pretrained='imagenet' exists for backbone=mobilenet_v2 only; for resnet18 give a "
                            "torchvision-layout checkpoint file (e.g. resnet18_msceleb.pth)")
    if min(cfg.batch_size, cfg.image_size, cfg.num_classes, cfg.eval_batch, cfg.mlp_layers) < 1 or cfg.mlp_hidden < 0:
        raise LowlabelError("batch_size, image_size, num_classes, eval_batch and mlp_layers must be positive, "
                            "mlp_hidden at least 0")


def _load_torchvision_resnet(model: nn.Module, path: Path) -> None:
    """Weights of a torchvision-layout ResNet checkpoint (a state dict, or a dict with `state_dict`; `module.`
    prefixes of DataParallel saves removed) into `model`, the classifier (`fc.*`) left out."""
    from lowlabel.engine import checkpoint as ckpt

    if not path.is_file():
        raise LowlabelError(f"pretrained={path}: file not found; give a torchvision-layout ResNet-18 checkpoint")
    state = ckpt.load(path)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise LowlabelError(f"{path}: not a state dict")
    state = {str(k).removeprefix("module."): v for k, v in state.items()
             if not str(k).removeprefix("module.").startswith("fc.")}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [k for k in expected if k in state and getattr(state[k], "shape", None) != expected[k].shape]
    if missing or unexpected or misshapen:
        raise LowlabelError(f"{path} does not fit this ResNet-18 (width {expected['conv1.weight'].shape[0]}): missing "
                            f"{missing[:4]}, unexpected {unexpected[:4]}, other shapes {misshapen[:4]}")
    model.load_state_dict(state)


def build_backbone(cfg: Config) -> tuple[nn.Module, int]:
    """The backbone of `cfg` (images -> pooled (N, P) or a map the model pools) and its feature size P."""
    if cfg.backbone == "dlib":
        return nn.Identity(), DLIB_DIM
    if cfg.backbone == "mobilenet_v2":
        from lowlabel.nn.mobilenet import mobilenet_v2

        net = mobilenet_v2(pretrained=cfg.pretrained == "imagenet", num_classes=0)
        if cfg.pretrained not in ("", "imagenet"):
            from lowlabel.nn.mobilenet import load_imagenet_weights

            load_imagenet_weights(net, cfg.pretrained)
        return net, net.feature_dim
    from lowlabel.nn.resnet import resnet18

    net = resnet18(num_classes=0, width=cfg.width)
    if cfg.pretrained:
        _load_torchvision_resnet(net, Path(cfg.pretrained))
    return net, 8 * cfg.width


def build_model(cfg: Config) -> FDRL:
    """Backbone + the head of `cfg` (FDRL head, or a baseline's: linear with or without centres, or the MLP)."""
    check_config(cfg)
    backbone, dim = build_backbone(cfg)
    if cfg.head == "fdrl":
        head: nn.Module = FDRLHead(dim, cfg.num_classes, num_latent=cfg.num_latent, latent_dim=cfg.latent_dim,
                                   relation=cfg.relation, delta=cfg.delta, skip=cfg.skip,
                                   epn_init_scale=cfg.epn_init_scale)
    elif cfg.head == "mlp":
        hidden = cfg.mlp_hidden or matched_mlp_width(
            dim, cfg.num_classes, fdrl_head_size(dim, cfg.num_classes, num_latent=cfg.num_latent,
                                                 latent_dim=cfg.latent_dim), cfg.mlp_layers)
        head = MLPHead(dim, cfg.num_classes, hidden=hidden, layers=cfg.mlp_layers)
    else:
        head = LinearHead(dim, cfg.num_classes, centres=cfg.head == "centre")
    return FDRL(backbone, head)


def _cache_dir(cfg: Config) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path.home() / ".cache" / "lowlabel" / "fdrl"


def load_split(cfg: Config, data: Path | None, split: str) -> Split:
    """`split` ("train"/"test") of the dataset folder `data` (any `data.layout`), or of the faces world; the train
    split cut to `train_per_class` images per class when set. Inputs as the backbone takes them."""
    if data is None:
        w = cfg.world
        world = fdata.faces_world(w.train_identities if split == "train" else w.test_identities,
                                  w.images_per_identity, seed=w.seed if split == "train" else w.seed + 10_000,
                                  size=w.size, intensity_range=w.intensity_range, degraded=w.degraded,
                                  expressions=w.expressions)
        inputs, labels, classes = world["images"], world["labels"], tuple(world["classes"])
        if cfg.backbone == "dlib":
            from lowlabel.data.face_embedding import DlibEmbedder

            u8 = inputs.permute(0, 2, 3, 1).numpy()
            inputs = torch.from_numpy(DlibEmbedder().embed(list(u8)))
    else:
        s = fdata.read_split(data, split)
        paths, labels_np, classes = list(s.paths), s.labels, s.classes
        if split == "train" and cfg.train_per_class > 0:
            keep = fdata.subset_per_class(labels_np, cfg.train_per_class, cfg.subset_seed)
            paths, labels_np = [paths[i] for i in keep], labels_np[keep]
        if cfg.align:
            from lowlabel.methods.fdrl.align import FaceAligner, align_files

            aligned = align_files(paths, _cache_dir(cfg) / "aligned", aligner=FaceAligner(size=max(cfg.image_size,
                                                                                                     150)),
                                  on_missing="keep")
            paths = [p for p in aligned if p is not None]
        if cfg.backbone == "dlib":
            from lowlabel.data.face_embedding import DlibEmbedder, embed_files

            inputs = torch.from_numpy(embed_files(DlibEmbedder(), paths, cache_dir=_cache_dir(cfg)))
        else:
            inputs = fdata.load_image_bytes(paths, cfg.image_size)
        labels = torch.from_numpy(np.asarray(labels_np, np.int64))
    if cfg.backbone != "dlib" and inputs.dtype != torch.uint8:
        raise LowlabelError("image inputs must be uint8")
    return Split(inputs, labels, classes)


def predict_files(cfg: Config, model: nn.Module, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities (N, C) and FDRL branch weights (N, M) (None for a baseline head) of image files, read
    (and aligned / embedded) as training read them."""
    paths = [Path(p) for p in paths]
    if cfg.align:
        from lowlabel.methods.fdrl.align import FaceAligner, align_files

        paths = [p for p in align_files(paths, _cache_dir(cfg) / "aligned",
                                        aligner=FaceAligner(size=max(cfg.image_size, 150)), on_missing="keep")
                 if p is not None]
    if cfg.backbone == "dlib":
        from lowlabel.data.face_embedding import DlibEmbedder, embed_files

        inputs = torch.from_numpy(embed_files(DlibEmbedder(), paths, cache_dir=_cache_dir(cfg)))
    else:
        inputs = fdata.load_image_bytes(paths, cfg.image_size)
    logits, weights = predict(model, inputs, cfg.eval_batch)
    return logits.softmax(1), weights


def prepare(inputs: torch.Tensor) -> torch.Tensor:
    """Network input of a batch: uint8 images -> ImageNet-standardised float; features unchanged."""
    return fdata.normalise_images(inputs) if inputs.dtype == torch.uint8 else inputs.float()


def objective(cfg: Config, out: Any, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The named, weighted loss terms of one batch (summed by the Trainer); the centres come with the output."""
    if isinstance(out, FDRLOutput):
        terms = losses.fdrl_loss(out.logits, labels, out.latent, out.alphas, out.latent_centres, out.class_centres,
                                 lambda_c=cfg.lambda_c, lambda_b=cfg.lambda_b, lambda_d=cfg.lambda_d,
                                 balance=cfg.balance)
        return {"cls": terms["cls"], "compactness": cfg.lambda_c * terms["compactness"],
                "balance": cfg.lambda_b * terms["balance"], "distribution": cfg.lambda_d * terms["distribution"]}
    out_terms = {"cls": F.cross_entropy(out.logits, labels)}
    if out.class_centres is not None:
        out_terms["centre"] = cfg.lambda_centre * losses.centre_loss(out.feature, labels, out.class_centres)
    return out_terms


def make_step_fn(cfg: Config) -> Any:
    """step_fn(model, (inputs, labels), step) -> weighted loss terms; images are flipped at random (p = 0.5)."""

    def step_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        inputs, labels = batch
        x = prepare(inputs)
        if cfg.flip and x.ndim == 4:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return objective(cfg, model(x), labels)

    return step_fn


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (N, C) and, for the FDRL head, the normalised per-branch weights (N, M), in eval mode, in chunks."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, weights = [], []
    try:
        for chunk in inputs.split(batch_size):
            out = model(prepare(chunk.to(device)))
            logits.append(out.logits.float().cpu())
            if isinstance(out, FDRLOutput):
                weights.append(out.weights.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), (torch.cat(weights) if weights else None)


def scores(model: nn.Module, split: Split, batch_size: int = 256) -> dict[str, Any]:
    """Accuracy (the paper's metric), balanced accuracy, the confusion matrix (rows: true class) and, for FDRL, the
    mean normalised branch weights per true class (C, M)."""
    logits, weights = predict(model, split.inputs, batch_size)
    y, pred = split.labels.numpy(), logits.argmax(1).numpy()
    c = len(split.classes)
    confusion = np.zeros((c, c), np.int64)
    np.add.at(confusion, (y, pred), 1)
    present = confusion.sum(1) > 0
    recall = np.diag(confusion)[present] / confusion.sum(1)[present]
    out: dict[str, Any] = {"accuracy": float((y == pred).mean()), "balanced_accuracy": float(recall.mean()),
                           "confusion": confusion.tolist(), "classes": list(split.classes)}
    if weights is not None:
        w = weights.numpy()
        out["mean_weights"] = [w[y == k].mean(0).tolist() if (y == k).any() else [float("nan")] * w.shape[1]
                               for k in range(c)]
    return out


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """Train on the train split, evaluate the last step on the test split; summary.json and the figures in run_dir."""
    return train_model(cfg, data=data, run_dir=run_dir, runtime=runtime, resume=resume)[1]


def train_model(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool,
                train_split: Split | None = None, test: Split | None = None,
                figures: bool = True) -> tuple[FDRL, dict]:
    """`train`, returning the trained model with the summary (`train_split`, `test`: splits already loaded)."""
    from lowlabel.engine.config import save_config

    check_config(cfg)
    train_split = train_split if train_split is not None else load_split(cfg, data, "train")
    test = test if test is not None else load_split(cfg, data, "test")  # a broken test set fails before training
    cfg = dataclasses.replace(cfg, num_classes=len(train_split.classes), classes=list(train_split.classes))
    if runtime.is_main:
        save_config(cfg, Path(run_dir) / "config.yaml")
    with seeded(cfg.train.seed):  # the same head initialisation whatever ran before in this process
        model = build_model(cfg)
    batches = TensorBatches([train_split.inputs, train_split.labels], cfg.batch_size, runtime, seed=cfg.train.seed,
                            drop_last=True)
    trainer = Trainer(model, make_step_fn(cfg), config=cfg.train, optim=cfg.optim, runtime=runtime, run_dir=run_dir)
    summary = trainer.fit(batches, resume=resume)
    result = scores(unwrap(trainer.model), test, cfg.eval_batch)
    summary.update({"n_train": len(train_split.labels), "n_test": len(test.labels), "test": result})
    if runtime.is_main:
        write_json(Path(run_dir) / "summary.json", summary)
        if figures:
            from lowlabel.methods.fdrl.plots import run_figures

            run_figures(Path(run_dir))
    return model, summary


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """Accuracy and balanced accuracy of a checkpoint on the test split."""
    model = load_model(build_model, cfg, checkpoint, runtime.device)
    result = scores(model, load_split(cfg, data, "test"), cfg.eval_batch)
    return {"accuracy": result["accuracy"], "balanced_accuracy": result["balanced_accuracy"]}


def smoke_case(runtime: Runtime) -> SmokeCase:
    """A width-4 ResNet-18 with a small FDRL head (M = 3, D = 4) on one batch of eight 32-px faces."""
    cfg = Config(width=4, num_latent=3, latent_dim=4, batch_size=8,
                 world=WorldConfig(train_identities=2, images_per_identity=4, size=32))
    world = fdata.faces_world(2, 4, seed=0, size=32)
    with seeded(0):
        model = build_model(cfg).to(runtime.device)
    return SmokeCase(model=model, step_fn=make_step_fn(cfg), batch=(world["images"], world["labels"]))
