"""SDD-FIQA recipe: recogniser -> pseudo-labels -> quality regressor, trained through the engine; evaluation.

Config defaults are the official ones (spec "Training procedure"): Adam(lr 1e-4, betas (0.9, 0.99), eps 1e-6,
weight decay 5e-4), MultiStepLR at epochs [5, 10] of 20 with gamma 0.1 (`optim.milestones` [0.25, 0.5] of the run),
20 epochs, batch 5000, horizontal flips, Smooth-L1 on 0..100 targets, 112x112 inputs in [-1, 1], dropout 0.5, trunk
initialised from the recogniser, seed 0. The demo lives in demo.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from scipy.stats import spearmanr

from lowlabel.engine.batches import DatasetBatches, TensorBatches, embed
from lowlabel.engine.checkpoint import newest_checkpoint
from lowlabel.engine.demo import SmokeCase
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.engine.trainer import Trainer, unwrap
from lowlabel.errors import LowlabelError
from lowlabel.methods.sdd_fiqa import data as fdata
from lowlabel.methods.sdd_fiqa.extractors import recognizer_state, save_recognizer
from lowlabel.methods.sdd_fiqa.losses import huber_regression_loss, sdd_pseudo_labels
from lowlabel.methods.sdd_fiqa.model import FaceEmbedder, QualityRegressor, Recognizer

StepFn = Callable[[torch.nn.Module, tuple[torch.Tensor, ...], int], dict[str, torch.Tensor]]
WORLD_RECOGNIZER = "recognizer.pt"  # a faces-world run's recogniser (TorchScript), kept for its EVRC


@dataclass
class RecognizerConfig:
    """The built-in recogniser (faces world only): ArcFace-style margin softmax, Adam with a cosine schedule."""

    width: int = 16
    embed_dim: int = 64
    batch_size: int = 64
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=600, log_every=10**9,
                                                                   checkpoint_every=10**9))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=2e-3, betas=[0.9, 0.999],
                                                                   eps=1e-8, schedule="cosine"))


@dataclass
class LabelConfig:
    """Pseudo-label sampling (official: 24 positives, 24 negatives, 12 repetitions)."""

    n_pos: int = 24
    n_neg: int = 24
    repeats: int = 12
    seed: int = 0
    pool_size: int = 128
    skip_singletons: bool = False


@dataclass
class Config:
    """The quality regressor (`train`, `optim`: the official values) and, on the faces world, the recogniser and
    pseudo-labels that feed it."""

    image_size: int = 112
    width: int = 16
    dropout: float = 0.5
    loss: str = "smooth_l1"
    batch_size: int = 5000
    labels_file: str = ""  # CSV from `lowlabel fiqa label` (train with --data)
    init_from: str = ""  # recogniser file whose trunk starts the regressor (train with --data), or "none"
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    world_identities: int = 80
    world_per_identity: int = 16
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, log_every=20, checkpoint_every=200))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="adam", lr=1e-4, betas=[0.9, 0.99], eps=1e-6, weight_decay=5e-4, schedule="step",
        milestones=[0.25, 0.5], gamma=0.1))


def build_model(cfg: Config) -> QualityRegressor:
    """The quality regressor of `cfg`, its initial weights drawn from `cfg.train.seed` (global RNG untouched)."""
    with seeded(cfg.train.seed):
        return QualityRegressor(width=cfg.width, image_size=cfg.image_size, dropout=cfg.dropout)


def _flip(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip per image (the official augmentation); x (B, 3, H, W)."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def regressor_step(loss: str, seed: int = 0) -> StepFn:
    """The regressor's training step on (images (B, 3, S, S), pseudo-labels (B,)): flip, predict, `loss`.

    The step's randomness (flips, dropout) comes from the CPU generator seeded by (seed, step), so a run resumed from
    a checkpoint replays the very same steps whatever else drew from the global stream meanwhile (a DataLoader
    started mid-epoch does)."""

    def step(m: torch.nn.Module, batch: tuple[torch.Tensor, ...], index: int) -> dict[str, torch.Tensor]:
        x, q = batch
        with seeded(seed * 1_000_003 + index):
            return {loss: huber_regression_loss(m(_flip(x)), q, loss)}

    return step


def train_recognizer(images: torch.Tensor, identity: torch.Tensor, rc: RecognizerConfig, runtime: Runtime,
                     *, image_size: int) -> FaceEmbedder:
    """Train the built-in recogniser on (images (N, 3, S, S) in [-1, 1], identity (N,)) and return its embedder
    (in eval mode). Weights, batch order and flips come from `rc.train.seed`."""
    ids, y = torch.unique(identity, return_inverse=True)
    with seeded(rc.train.seed):
        model = Recognizer(n_classes=len(ids), width=rc.width, image_size=image_size, embed_dim=rc.embed_dim)

    def step(m: torch.nn.Module, batch: tuple[torch.Tensor, ...], _: int) -> dict[str, torch.Tensor]:
        x, t = batch
        return {"ce": torch.nn.functional.cross_entropy(m(_flip(x), t), t)}

    Trainer(model, step, config=rc.train, optim=rc.optim, runtime=runtime).fit(
        TensorBatches([images, y], rc.batch_size, runtime, seed=rc.train.seed, drop_last=True))
    return model.embedder.eval()


def load_trunk(model: QualityRegressor, path: str | Path) -> None:
    """Start the regressor's trunk from a recogniser file (spec "Training procedure": the trunk is copied from the FR
    checkpoint): the `trunk.*` tensors of a `FaceEmbedder` / `Recognizer` (TorchScript from `lowlabel fiqa
    recognizer`, or a state dict). Unlike the official partial copy, every trunk tensor must be there with its shape,
    so a recogniser of another architecture or width is an error, not a silent half-initialisation."""
    state = recognizer_state(path)
    trunk = {k.split("trunk.", 1)[1]: v for k, v in state.items() if "trunk." in k}
    expected = model.trunk.state_dict()
    wrong = [k for k, v in expected.items() if k not in trunk or trunk[k].shape != v.shape]
    if wrong:
        raise LowlabelError(f"{path}: its trunk does not fit the regressor's ({len(wrong)} of {len(expected)} trunk "
                            f"tensors missing or of another shape, e.g. trunk.{wrong[0]}); train the recogniser with "
                            "`lowlabel fiqa recognizer` at the regressor's --width, or set init_from to none")
    model.trunk.load_state_dict({k: trunk[k] for k in expected})


def check_data_config(cfg: Config, *, trunk_needed: bool = True) -> None:
    """What training on a user's folder needs before any run folder is made: a labels file and, unless the run
    continues from a checkpoint (which holds the trunk), a trunk source."""
    if not cfg.labels_file:
        raise LowlabelError("labels_file is empty: run `lowlabel fiqa label DATA --out labels.csv` and pass "
                            "--labels labels.csv (or --set labels_file=labels.csv)")
    if not Path(cfg.labels_file).is_file():
        raise LowlabelError(f"labels_file {cfg.labels_file} does not exist")
    if not trunk_needed:
        return
    if not cfg.init_from:
        raise LowlabelError("init_from is empty: the regressor's trunk starts from the recogniser (spec); give the "
                            "TorchScript file from `lowlabel fiqa recognizer` (--recognizer FILE, or --set "
                            "init_from=FILE), or 'none' to train the trunk from scratch (e.g. labels made with dlib)")
    if cfg.init_from != "none" and not Path(cfg.init_from).is_file():
        raise LowlabelError(f"init_from {cfg.init_from} does not exist")


def fit_regressor(cfg: Config, source: TensorBatches | DatasetBatches, runtime: Runtime, *, run_dir: Path | None,
                  resume: bool = False, init: FaceEmbedder | str | Path | None = None
                  ) -> tuple[QualityRegressor, dict]:
    """Train the quality regressor on (image, pseudo-label) batches with `cfg.optim` for `cfg.train`'s length;
    the trunk starts from `init` (the recogniser, or a recogniser file: `load_trunk`) when given. A resumed run
    takes every weight from its checkpoint."""
    model = build_model(cfg)
    if isinstance(init, (str, Path)):
        load_trunk(model, init)
    elif init is not None:
        model.init_trunk_from(init)
    trainer = Trainer(model, regressor_step(cfg.loss, cfg.train.seed), config=cfg.train, optim=cfg.optim,
                      runtime=runtime, run_dir=run_dir)
    summary = trainer.fit(source, resume=resume)
    return unwrap(trainer.model), summary


def world_pipeline(cfg: Config, runtime: Runtime, *, seed: int = 0) -> dict:
    """Faces world (of `seed`) -> built-in recogniser -> pseudo-labels; returns the world, the embedder and the
    labels (N,) on the CPU."""
    world = fdata.faces_world(cfg.world_identities, cfg.world_per_identity, seed=seed, size=cfg.image_size)
    embedder = train_recognizer(world["images"], world["identity"], cfg.recognizer, runtime,
                                image_size=cfg.image_size)
    lc = cfg.labels
    emb = embed(embedder, world["images"], device=runtime.device).cpu()
    q = sdd_pseudo_labels(emb, world["identity"], lc.n_pos, lc.n_neg, lc.repeats, lc.seed, pool_size=lc.pool_size,
                          skip_singletons=lc.skip_singletons)
    return {"world": world, "embedder": embedder, "pseudo": q}


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """Train the regressor: on the faces world (data None; recogniser and labels made here, the recogniser saved as
    `WORLD_RECOGNIZER` in the run folder for `checkpoint_evrc`) or on `data` (a folder per identity) with the
    pseudo-labels of `cfg.labels_file`, the trunk starting from `cfg.init_from`."""
    if data is None:
        made = world_pipeline(cfg, runtime)
        if runtime.is_main:
            save_recognizer(made["embedder"], Path(run_dir) / WORLD_RECOGNIZER)
        images, q = made["world"]["images"], made["pseudo"].float()
        source = TensorBatches([images, q], min(cfg.batch_size, len(q)), runtime, seed=cfg.train.seed,
                               drop_last=True)
        model, summary = fit_regressor(cfg, source, runtime, run_dir=run_dir, resume=resume, init=made["embedder"])
        pred = embed(model, images, device=runtime.device).cpu().numpy()
        summary["spearman_pseudo_vs_true"] = float(spearmanr(q, made["world"]["quality"]).statistic)
        summary["spearman_pred_vs_pseudo"] = float(spearmanr(pred, q).statistic)
        return summary
    trunk_needed = not (resume and newest_checkpoint(run_dir) is not None)
    check_data_config(cfg, trunk_needed=trunk_needed)
    images = fdata.labelled_images(cfg.labels_file, data, cfg.image_size)
    source = DatasetBatches(images, min(cfg.batch_size, len(images)), runtime, seed=cfg.train.seed)
    init = cfg.init_from if trunk_needed and cfg.init_from != "none" else None
    _, summary = fit_regressor(cfg, source, runtime, run_dir=run_dir, resume=resume, init=init)
    return summary


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """Spearman of the regressor's scores with the true quality of held-out faces (data None) or with the
    pseudo-labels of `cfg.labels_file` (data given)."""
    model = load_model(build_model, cfg, checkpoint, runtime.device)
    if data is None:
        world = fdata.faces_world(20, 10, seed=1001, size=cfg.image_size)
        pred = embed(model, world["images"], device=runtime.device).cpu().numpy()
        return {"spearman_vs_true_quality": float(spearmanr(pred, world["quality"]).statistic)}
    labelled = fdata.labelled_images(cfg.labels_file, data, cfg.image_size)
    pred = embed(model, fdata.load_images(labelled.paths, cfg.image_size), device=runtime.device).cpu().numpy()
    return {"spearman_vs_pseudo_labels": float(spearmanr(pred, labelled.quality.numpy()).statistic)}


def smoke_case(runtime: Runtime) -> SmokeCase:
    """A tiny regressor, one batch of 16x16 images with 0..100 targets, and the training step."""
    model = build_model(Config(image_size=16, width=4)).to(runtime.device)
    gen = torch.Generator().manual_seed(0)
    batch = ((torch.rand(4, 3, 16, 16, generator=gen) * 2 - 1).to(runtime.device),
             (torch.rand(4, generator=gen) * 100).to(runtime.device))
    return SmokeCase(model=model, step_fn=regressor_step("smooth_l1"), batch=batch)
