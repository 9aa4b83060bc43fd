"""COMPLETER recipe: official defaults, training on the complete samples through the engine's Trainer, imputation
of the missing latents, k-means on the fused latents, train/evaluate on a .mat file or the digits world, and the
smoke case.

Total loss per step (spec Loss 4): L = L_cl + λ2 L_rec + [step ≥ start] λ1 L_pre, the prediction term switched on
at a fraction of the run (official: epoch 100 of 500, `loss.prediction_start` = 0.2).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowlabel.engine import batches as engine_batches
from lowlabel.engine.batches import TensorBatches
from lowlabel.engine.config import save_config
from lowlabel.engine.demo import SmokeCase
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.engine.trainer import Trainer
from lowlabel.errors import LowlabelError
from lowlabel.files import write_text
from lowlabel.methods.completer.data import (
    GENERIC,
    LAYOUTS,
    OTHER_DATA,
    MultiView,
    check_mask,
    check_views,
    digits_world,
    load_mat,
    make_mask,
)
from lowlabel.methods.completer.losses import cross_view_contrastive, dual_prediction, reconstruction
from lowlabel.methods.completer.model import Completer, pair_key
from lowlabel.methods.completer.plots import plot_imputation, plot_latents
from lowlabel.metrics.clustering import clustering_scores, kmeans


@dataclass
class DataConfig:
    layout: str = ""  # scene15, landuse21, caltech101_20, noisymnist, generic; "" = from the file's name, else content
    views: list[int] = field(default_factory=list)  # cells of X to use (0-based); [] = the layout's (generic: all)
    n_clusters: int = 0  # K; 0 = the number of distinct labels (official), required for a file without labels
    missing_rate: float = 0.5  # fraction of samples with a missing view (paper's η)
    mask_seed: int = 1  # the paper's runs use mask seeds 1..5
    batch_size: int = 256


@dataclass
class ModelConfig:
    view_dims: list[int] = field(default_factory=list)  # widths of the views; [] = the data's (training saves them)
    d_z: int = 0  # 0: the layout's official size (Scene 128, LandUse 64, Caltech 128, NoisyMNIST 64; other data 32)
    hidden: list[int] = field(default_factory=lambda: [1024, 1024, 1024])
    predictor_hidden: list[int] = field(default_factory=lambda: [128, 256, 128])


@dataclass
class LossConfig:
    alpha: float = 9.0  # entropy weight of L_cl (official `lamb`)
    lambda_pre: float = 0.1  # λ1, dual prediction
    lambda_rec: float = 0.1  # λ2, reconstruction
    prediction_start: float = 0.2  # fraction of the run before L_pre starts (official: epoch 100 of 500)


@dataclass
class EvalConfig:
    every_epochs: int = 100  # scores (embedding + k-means) and checkpoints every N epochs; 0 = at the end only
    kmeans_n_init: int = 10


@dataclass
class SweepConfig:
    """The runs of `lowlabel completer cluster`: every missing rate with mask seeds 1..seeds (paper: 0.5, 5 seeds)."""

    missing_rates: list[float] = field(default_factory=lambda: [0.5])
    seeds: int = 5


@dataclass
class Config:
    """Official COMPLETER hyperparameters (configure.py): Adam 1e-4 without weight decay or schedule, 500 epochs,
    batch 256, α = 9, λ1 = λ2 = 0.1, L_pre from epoch 100. `train.seed` -1 = the layout's official seed (Scene 8,
    LandUse 3, Caltech 4, NoisyMNIST 0; other data 0), used for the model, the batch order and k-means.
    `train.eval_every` / `train.checkpoint_every` 0 = every `eval.every_epochs` epochs (`step_intervals`)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=500, log_every=100, checkpoint_every=0, eval_every=0, amp=False, seed=-1))
    # fused Adam: one kernel per step for all parameters (the update COMPLETER's numbers were measured with)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-4, weight_decay=0.0, fused=True))


# ------------------------------------------------------------------------------------------- config and model
def _d_z_and_seed(cfg: Config) -> tuple[int, int]:
    preset = LAYOUTS.get(cfg.data.layout, OTHER_DATA)
    return cfg.model.d_z or preset["d_z"], cfg.train.seed if cfg.train.seed >= 0 else preset["seed"]


def resolved(cfg: Config, views: Sequence[np.ndarray], layout: str = "") -> Config:
    """`cfg` with what the data decides written in: model.view_dims (the views' widths), data.layout (`layout`
    when it is an official one), model.d_z and train.seed (the layout's official values where 0 / -1)."""
    dims = [int(x.shape[1]) for x in views]
    if cfg.model.view_dims and list(cfg.model.view_dims) != dims:
        raise LowlabelError(f"model.view_dims={list(cfg.model.view_dims)} but the data's views are {dims} wide; "
                            "use the config of a run on this data, or leave model.view_dims empty")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, layout=layout if layout in (*LAYOUTS, GENERIC)
                                                            else cfg.data.layout))
    d_z, seed = _d_z_and_seed(cfg)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, view_dims=dims, d_z=d_z),
                               train=dataclasses.replace(cfg.train, seed=seed))


def build_model(cfg: Config) -> Completer:
    """The COMPLETER of `cfg` (views `model.view_dims`: a run's config.yaml has them), initialised from the run's
    seed on a forked generator: the weights of `torch.manual_seed(seed)` + build, the global stream untouched."""
    if not cfg.model.view_dims:
        raise LowlabelError("model.view_dims is empty: build the model from the config.yaml of a run (training writes "
                            "the views' widths there) or set model.view_dims=[d1,d2]")
    d_z, seed = _d_z_and_seed(cfg)
    with seeded(seed):
        return Completer(view_dims=cfg.model.view_dims, d_z=d_z, hidden=cfg.model.hidden,
                         predictor_hidden=cfg.model.predictor_hidden)


def step_intervals(cfg: Config, steps_per_epoch: int) -> TrainConfig:
    """`cfg.train` with its evaluation and checkpoint intervals in steps: `train.eval_every` and
    `train.checkpoint_every` where set (> 0), else every `eval.every_epochs` epochs; with that 0 too, no
    evaluation during training and a checkpoint at the end only. COMPLETER's only epochs-to-steps conversion (the
    run's length is the Trainer's: `TrainConfig.total_steps`)."""
    every = cfg.eval.every_epochs * steps_per_epoch
    return dataclasses.replace(cfg.train, eval_every=cfg.train.eval_every or every,
                               checkpoint_every=cfg.train.checkpoint_every or every
                               or cfg.train.total_steps(steps_per_epoch))


# ------------------------------------------------------------------------------------------------ training
def prediction_active(step: int, total_steps: int, start: float) -> bool:
    """Whether L_pre is on at `step` of a `total_steps` run: from step round(start × total) on (official: epoch
    100 of 500, start 0.2)."""
    return step >= round(start * total_steps)


def step_fn_for(
    *, alpha: float, prediction_start: float, total_steps: int
) -> Callable[[torch.nn.Module, Sequence[torch.Tensor], int], dict[str, torch.Tensor]]:
    """Step function for the Trainer on a batch of complete samples (one (B, d_v) tensor per view).

    Returns {'cl': Σ_{s<t} L_cl(z_s, z_t), 'rec': Σ_v MSE, 'pre': Σ_{s<t} L_pre(s, t)} (spec Loss 4, weights λ via
    the trainer); 'pre' (and the predictors' forward) only once `prediction_active`, as in the official code. For
    two views the sums have one term: the official loss. For V > 2 views every view pair contributes (our
    extension). Loss maths runs in float32 even under autocast.
    """

    def step_fn(model: torch.nn.Module, batch: Sequence[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        xs = list(batch)
        predict = prediction_active(step, total_steps, prediction_start)
        zs, x_hats, preds = model(xs, predict=predict)
        zs = [z.float() for z in zs]
        pairs = list(itertools.combinations(range(len(xs)), 2))
        losses = {
            "cl": torch.stack([cross_view_contrastive(zs[s], zs[t], alpha=alpha) for s, t in pairs]).sum(),
            "rec": reconstruction([x.float() for x in x_hats], xs),
        }
        if predict:
            losses["pre"] = torch.stack([
                dual_prediction(zs[s], zs[t], preds[pair_key(s, t)].float(), preds[pair_key(t, s)].float())
                for s, t in pairs
            ]).sum()
        return losses

    return step_fn


@torch.no_grad()
def embed(model: Completer, views: Sequence[np.ndarray], mask: np.ndarray, device: torch.device,
          chunk: int = 8192) -> np.ndarray:
    """Fused latents (n, V * d_z) of every sample, missing views imputed (`Completer.embed`; model put in eval
    mode), `chunk` rows at a time. views: (n, d_v) float32 per view; mask: (n, V) 0/1."""
    widths = [x.shape[1] for x in views] + [len(views)]
    packed = torch.from_numpy(np.hstack([*views, np.asarray(mask, dtype=np.float32)]))

    def fused(rows: torch.Tensor) -> torch.Tensor:
        *xs, keep = (part.contiguous() for part in rows.split(widths, dim=1))
        return model.embed(xs, keep).float().cpu()

    model.eval()
    return engine_batches.embed(fused, packed, batch_size=chunk, device=device).numpy()


def fit_and_cluster(
    cfg: Config,
    views: Sequence[np.ndarray],
    labels: np.ndarray | None,
    mask: np.ndarray,
    *,
    n_clusters: int,
    runtime: Runtime,
    run_dir: Path | None = None,
    resume: bool = False,
    source: str = "fit_and_cluster",
) -> dict[str, Any]:
    """Train COMPLETER (`build_model(resolved(cfg, views))`) on the complete samples of `views` under `mask`, then
    cluster all samples.

    views: (n, d_v) float32 per view; mask: (n, V) 0/1. Missing views are zeroed (official), training uses complete
    rows only, with `cfg.optim` (Adam) for the Trainer's run length (`train.epochs` or `train.max_steps`), batches
    reshuffled each epoch, last partial batch kept (dropped only when it would hold a single sample, which
    BatchNorm cannot train on). Returns {'assignments', 'embedding', 'mask' (the checked 0/1 mask), 'scores' (if
    labels), 'history' (scores at every evaluation), 'summary', 'n_complete', 'steps_per_epoch'}. `source` names
    the data in error messages.
    """
    check_views(views, labels, source=source)
    n = views[0].shape[0]
    keep = check_mask(mask, n, len(views))
    if n_clusters > n:
        raise LowlabelError(f"{source}: asked for {n_clusters} clusters but there are only {n} samples")
    cfg = resolved(cfg, views)
    views = [np.ascontiguousarray(x * keep[:, v : v + 1], dtype=np.float32) for v, x in enumerate(views)]
    complete = keep.all(axis=1)
    n_complete = int(complete.sum())
    if n_complete < 2:
        raise LowlabelError(f"{source}: only {n_complete} sample(s) have every view under missing rate "
                            f"{cfg.data.missing_rate}; training needs at least 2 (lower the missing rate)")
    batch_size, seed = cfg.data.batch_size, cfg.train.seed
    batches = TensorBatches([torch.from_numpy(x[complete]) for x in views], batch_size, runtime,
                            seed=seed, drop_last=n_complete % batch_size == 1)
    spe = batches.steps_per_epoch
    train = step_intervals(cfg, spe)
    total = train.total_steps(spe)
    history: list[dict[str, float]] = []
    last: dict[str, Any] = {}

    def eval_fn(m: torch.nn.Module, step: int) -> dict[str, float]:
        last.update(step=step, embedding=embed(m, views, keep, runtime.device))
        last["assign"] = kmeans(last["embedding"], n_clusters, n_init=cfg.eval.kmeans_n_init, seed=seed)
        scores = clustering_scores(labels, last["assign"]) if labels is not None else {}
        history.append({"epoch": step // spe, **scores})
        return scores

    model = build_model(cfg)
    trainer = Trainer(
        model,
        step_fn_for(alpha=cfg.loss.alpha, prediction_start=cfg.loss.prediction_start, total_steps=total),
        config=train,
        optim=cfg.optim,
        runtime=runtime,
        run_dir=run_dir,
        loss_weights={"rec": cfg.loss.lambda_rec, "pre": cfg.loss.lambda_pre},
        eval_fn=eval_fn if labels is not None else None,
        find_unused_parameters=cfg.loss.prediction_start > 0,
    )
    summary = trainer.fit(batches, resume=resume)
    if last.get("step") == total:  # the final evaluation already clustered the final model
        embedding, assign = last["embedding"], last["assign"]
    else:
        embedding = embed(model, views, keep, runtime.device)
        assign = kmeans(embedding, n_clusters, n_init=cfg.eval.kmeans_n_init, seed=seed)
    result: dict[str, Any] = {"assignments": assign, "embedding": embedding, "mask": keep, "history": history,
                              "summary": summary, "n_complete": n_complete, "steps_per_epoch": spe}
    if labels is not None:
        result["scores"] = clustering_scores(labels, assign)
    return result


# ------------------------------------------------------------------------------------------- the contract
def check_config(cfg: Config) -> None:
    """A LowlabelError for settings no run can use (checked before a run folder is made)."""
    problems = []
    if not cfg.sweep.missing_rates or any(not 0.0 <= r < 1.0 for r in cfg.sweep.missing_rates):
        problems.append(f"sweep.missing_rates {list(cfg.sweep.missing_rates)}: every rate must lie in [0, 1)")
    if not 0.0 <= cfg.data.missing_rate < 1.0:
        problems.append(f"data.missing_rate {cfg.data.missing_rate} must lie in [0, 1)")
    if cfg.sweep.seeds < 1:
        problems.append(f"sweep.seeds {cfg.sweep.seeds} must be at least 1")
    if cfg.data.n_clusters < 0:
        problems.append(f"data.n_clusters {cfg.data.n_clusters} must be 0 (the number of labels) or positive")
    if cfg.data.batch_size < 2:
        problems.append(f"data.batch_size {cfg.data.batch_size} must be at least 2 (BatchNorm)")
    if cfg.data.layout and cfg.data.layout not in (*LAYOUTS, GENERIC):
        problems.append(f"data.layout '{cfg.data.layout}': use one of {', '.join((*LAYOUTS, GENERIC))}")
    if problems:
        raise LowlabelError("; ".join(problems))


def load_data(cfg: Config, data: Path | None) -> MultiView:
    """The dataset of a run: the digits world when `data` is None, else the .mat file at `data` (`data.layout`,
    `data.views`)."""
    if data is None:
        return digits_world()
    dataset = load_mat(data, layout=cfg.data.layout or None, views=cfg.data.views or None)
    if dataset.labels is None and not cfg.data.n_clusters:
        raise LowlabelError(f"{data} has no labels (no Y), so the number of clusters is unknown: pass --n-clusters K "
                            "(config data.n_clusters)")
    return dataset


def write_assignments(path: Path, assignments: np.ndarray) -> Path:
    """The cluster id of every sample, in file order, as CSV with a `sample,cluster` header (written atomically)."""
    rows = "".join(f"{i},{int(c)}\n" for i, c in enumerate(assignments))
    return write_text(path, "sample,cluster\n" + rows)


def run_once(cfg: Config, dataset: MultiView, *, runtime: Runtime, run_dir: Path | None = None,
             resume: bool = False) -> dict[str, Any]:
    """One run on `dataset` under the mask of `cfg.data` (missing_rate, mask_seed) with K = `data.n_clusters` (0:
    the number of labels): `fit_and_cluster`. With a `run_dir`, it also gets the resolved config (config.yaml: view
    widths, d_z, seed), which evaluation reads, and assignments.csv."""
    cfg = resolved(cfg, dataset.views, dataset.name)
    n_clusters = cfg.data.n_clusters or dataset.n_clusters
    mask = make_mask(dataset.views[0].shape[0], len(dataset.views), cfg.data.missing_rate, cfg.data.mask_seed)
    if run_dir is not None and runtime.is_main:
        save_config(cfg, Path(run_dir) / "config.yaml")
    result = fit_and_cluster(cfg, dataset.views, dataset.labels, mask, n_clusters=n_clusters, runtime=runtime,
                             run_dir=run_dir, resume=resume, source=dataset.source or dataset.name)
    if run_dir is not None and runtime.is_main:
        write_assignments(Path(run_dir) / "assignments.csv", result["assignments"])
    return result


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """One COMPLETER run (mask seed `cfg.data.mask_seed`); writes config.yaml (resolved), checkpoints,
    metrics.jsonl, assignments.csv, latents_pca.png and imputation_pca.png (the report's figures). Scores only when
    the data has labels."""
    check_config(cfg)
    dataset = load_data(cfg, data)
    result = run_once(cfg, dataset, runtime=runtime, run_dir=run_dir, resume=resume)
    if runtime.is_main:
        plot_latents(result["embedding"], result["assignments"], Path(run_dir) / "latents_pca.png",
                     title=f"COMPLETER on {dataset.name}: fused latents (PCA) by cluster", projection="pca")
        plot_imputation(result["embedding"], result["mask"], result["assignments"],
                        Path(run_dir) / "imputation_pca.png")
    return {"dataset": dataset.name, "n_complete": result["n_complete"], "scores": result.get("scores"),
            "history": result["history"], "train": result["summary"]}


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """ACC/NMI/ARI of a trained checkpoint on the same data and mask (k-means on the imputed fused latents)."""
    dataset = load_data(cfg, data)
    if dataset.labels is None:
        raise LowlabelError(f"{data} has no labels (Y), so there is nothing to score; the run's assignments.csv "
                            "holds the clusters")
    cfg = resolved(cfg, dataset.views, dataset.name)
    mask = make_mask(dataset.labels.size, len(dataset.views), cfg.data.missing_rate, cfg.data.mask_seed)
    model = load_model(build_model, cfg, checkpoint, runtime.device)
    views = [x * mask[:, v : v + 1].astype(np.float32) for v, x in enumerate(dataset.views)]
    assign = kmeans(embed(model, views, mask, runtime.device), cfg.data.n_clusters or dataset.n_clusters,
                    n_init=cfg.eval.kmeans_n_init, seed=cfg.train.seed)
    return clustering_scores(dataset.labels, assign)


def smoke_case(runtime: Runtime) -> SmokeCase:
    """A tiny two-view COMPLETER with the prediction term active from step 0 and one batch of 8 complete pairs
    (model and batch drawn from seed 0 on a forked generator)."""
    with seeded(0):
        model = Completer(view_dims=[6, 5], d_z=4, hidden=[8, 8], predictor_hidden=[8, 8])
        batch = (torch.rand(8, 6), torch.rand(8, 5))
    return SmokeCase(model=model.to(runtime.device), step_fn=step_fn_for(alpha=9.0, prediction_start=0.0,
                                                                         total_steps=1),
                     batch=tuple(x.to(runtime.device) for x in batch))
