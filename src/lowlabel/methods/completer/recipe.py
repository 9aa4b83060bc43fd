"""COMPLETER recipe: official defaults, train/evaluate on a .mat file or the digits world, the multi-seed
clustering protocol, the demo against two k-means baselines, and the smoke case."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowlabel.engine.checkpoint import load as load_checkpoint
from lowlabel.engine.demo import DemoResult, SmokeCase
from lowlabel.engine.runtime import Runtime
from lowlabel.engine.trainer import TrainConfig
from lowlabel.errors import LowlabelError
from lowlabel.methods.completer.data import LAYOUTS, MultiView, digits_world, load_mat
from lowlabel.methods.completer.fit import check_mask, embed, fit_and_cluster, step_fn_for
from lowlabel.methods.completer.model import Completer
from lowlabel.metrics.clustering import clustering_scores, kmeans


@dataclass
class ModelConfig:
    d_z: int = 0  # 0: the layout's official size (Scene 128, LandUse 64, Caltech 128, NoisyMNIST 64; digits 32)
    hidden: list[int] = field(default_factory=lambda: [1024, 1024, 1024])
    predictor_hidden: list[int] = field(default_factory=lambda: [128, 256, 128])


@dataclass
class LossConfig:
    alpha: float = 9.0  # entropy weight of L_cl (official `lamb`)
    lambda_pre: float = 0.1  # λ1, dual prediction
    lambda_rec: float = 0.1  # λ2, reconstruction
    prediction_start_epoch: int = 100


@dataclass
class Config:
    """Official COMPLETER hyperparameters (configure.py). train.max_steps/eval_every/checkpoint_every are derived
    from `epochs` (the trainer counts steps: steps = epochs * steps_per_epoch)."""

    layout: str = ""  # "" guesses it from the .mat file name
    missing_rate: float = 0.5
    mask_seed: int = 1
    epochs: int = 500
    batch_size: int = 256
    lr: float = 1e-4
    eval_every_epochs: int = 100
    kmeans_n_init: int = 10
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=0, log_every=100, amp=False, seed=-1))


def demo_config(quick: bool = False) -> Config:
    """The spec's small CPU demo preset: AE [d, 256, 256, 256, 32], predictors [32, 64, 128, 64], Adam 1e-3,
    150 epochs with prediction from epoch 30 (quick: 60 epochs, prediction from epoch 20)."""
    return Config(
        layout="digits", epochs=60 if quick else 150, lr=1e-3, eval_every_epochs=0,
        model=ModelConfig(d_z=32, hidden=[256, 256, 256], predictor_hidden=[64, 128, 64]),
        loss=LossConfig(prediction_start_epoch=20 if quick else 30),
        train=TrainConfig(max_steps=0, log_every=10_000, amp=False, seed=0),
    )


def load_data(cfg: Config, data: Path | None) -> MultiView:
    """The dataset of a run: the digits world when `data` is None, else the official .mat at `data`."""
    return digits_world() if data is None else load_mat(data, layout=cfg.layout or None)


def make_mask(n: int, n_views: int, missing_rate: float, seed: int) -> np.ndarray:
    """Missing-view mask (n, n_views) 0/1 from the multiview world's `missing_view_mask` (paper's definition)."""
    if not 0.0 <= missing_rate < 1.0:
        raise LowlabelError(f"missing rate {missing_rate} is outside [0, 1); it is the fraction of incomplete samples")
    from lowlabel.data.synth.multiview import missing_view_mask

    return check_mask(missing_view_mask(n, n_views, missing_rate, seed), n, n_views).astype(np.int64)


def _resolved(cfg: Config, name: str) -> tuple[int, int]:
    preset = LAYOUTS.get(name, {"d_z": 32, "seed": 0})
    return cfg.model.d_z or preset["d_z"], cfg.train.seed if cfg.train.seed >= 0 else preset["seed"]


def build_model(cfg: Config, dataset: MultiView) -> Completer:
    """COMPLETER for `dataset`'s views, initialised from the run's seed."""
    d_z, seed = _resolved(cfg, dataset.name)
    torch.manual_seed(seed)
    return Completer(view_dims=[x.shape[1] for x in dataset.views], d_z=d_z, hidden=cfg.model.hidden,
                     predictor_hidden=cfg.model.predictor_hidden)


def run_once(cfg: Config, dataset: MultiView, mask: np.ndarray, *, runtime: Runtime, run_dir: Path | None = None,
             resume: bool = False) -> dict[str, Any]:
    """Train on `dataset` under `mask` and cluster every sample (see fit.fit_and_cluster)."""
    _, seed = _resolved(cfg, dataset.name)
    if dataset.n_clusters > dataset.labels.size:
        raise LowlabelError(f"{dataset.n_clusters} clusters for {dataset.labels.size} samples")
    return fit_and_cluster(
        dataset.views, dataset.labels, mask, model=build_model(cfg, dataset), epochs=cfg.epochs,
        batch_size=cfg.batch_size, lr=cfg.lr, alpha=cfg.loss.alpha, lambda_pre=cfg.loss.lambda_pre,
        lambda_rec=cfg.loss.lambda_rec, prediction_start_epoch=cfg.loss.prediction_start_epoch,
        n_clusters=dataset.n_clusters, kmeans_n_init=cfg.kmeans_n_init, eval_every_epochs=cfg.eval_every_epochs,
        train=dataclasses.replace(cfg.train, seed=seed), runtime=runtime, run_dir=run_dir, resume=resume,
    )


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """One COMPLETER run (mask seed `cfg.mask_seed`); writes checkpoints, metrics.jsonl and assignments.npy."""
    dataset = load_data(cfg, data)
    mask = make_mask(dataset.labels.size, len(dataset.views), cfg.missing_rate, cfg.mask_seed)
    result = run_once(cfg, dataset, mask, runtime=runtime, run_dir=run_dir, resume=resume)
    if runtime.is_main:
        np.save(run_dir / "assignments.npy", result["assignments"])
    return {"dataset": dataset.name, "n_complete": result["n_complete"], "scores": result["scores"],
            "history": result["history"], "train": result["summary"]}


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """ACC/NMI/ARI of a trained checkpoint on the same data and mask (k-means on the imputed fused latents)."""
    dataset = load_data(cfg, data)
    mask = make_mask(dataset.labels.size, len(dataset.views), cfg.missing_rate, cfg.mask_seed)
    model = build_model(cfg, dataset).to(runtime.device)
    try:
        model.load_state_dict(load_checkpoint(checkpoint, map_location=runtime.device)["model"])
    except (KeyError, RuntimeError) as err:
        raise LowlabelError(f"checkpoint {checkpoint} does not fit this model/config: {str(err)[:200]}") from None
    views = [x * mask[:, v : v + 1].astype(np.float32) for v, x in enumerate(dataset.views)]
    _, seed = _resolved(cfg, dataset.name)
    assign = kmeans(embed(model, views, mask, runtime.device), dataset.n_clusters, n_init=cfg.kmeans_n_init,
                    seed=seed)
    return clustering_scores(dataset.labels, assign)


def baselines(dataset: MultiView, mask: np.ndarray, *, n_init: int = 10, seed: int = 0) -> dict[str, dict]:
    """k-means on the concatenated views with missing views zero-filled, and with them mean-imputed (mean of the
    view over samples that have it)."""
    keep = mask.astype(bool)
    zero = [x * keep[:, v : v + 1] for v, x in enumerate(dataset.views)]
    mean = [np.where(keep[:, v : v + 1], x, x[keep[:, v]].mean(axis=0, keepdims=True))
            for v, x in enumerate(dataset.views)]
    k = dataset.n_clusters
    return {
        "kmeans_zero_fill": clustering_scores(dataset.labels, kmeans(np.hstack(zero), k, n_init=n_init, seed=seed)),
        "kmeans_mean_impute": clustering_scores(dataset.labels, kmeans(np.hstack(mean), k, n_init=n_init, seed=seed)),
    }


def demo(*, quick: bool, out: Path, runtime: Runtime) -> DemoResult:
    """COMPLETER vs k-means baselines on the two-view digits world at missing rate 0.5, mean over mask seeds 1-3
    (quick: seed 1 only, 60 epochs). Writes a t-SNE plot of the latents of the first seed."""
    t0 = time.perf_counter()
    cfg = demo_config(quick)
    dataset = digits_world()
    rows: dict[str, list[dict[str, float]]] = {"completer": [], "kmeans_zero_fill": [], "kmeans_mean_impute": []}
    first = None
    for seed in (1,) if quick else (1, 2, 3):
        mask = make_mask(dataset.labels.size, len(dataset.views), 0.5, seed)
        result = run_once(cfg, dataset, mask, runtime=runtime)
        first = first or result
        rows["completer"].append(result["scores"])
        for name, scores in baselines(dataset, mask).items():
            rows[name].append(scores)
    mean_rows = {name: {m: float(np.mean([r[m] for r in runs])) for m in runs[0]} for name, runs in rows.items()}
    out.mkdir(parents=True, exist_ok=True)
    from lowlabel.methods.completer.plots import plot_latents

    plot_latents(first["embedding"], first["assignments"], out / "latents_tsne.png", title="COMPLETER on digits")
    notes = [f"two-view digits, missing rate 0.5, mask seeds {'1' if quick else '1-3'}, demo preset "
             f"({cfg.epochs} epochs, AE hidden {cfg.model.hidden}, d_z {cfg.model.d_z}, lr {cfg.lr})"]
    return DemoResult(slug="completer", metric="acc", method="completer", baseline="kmeans_zero_fill",
                      rows=mean_rows, notes=notes, seconds=time.perf_counter() - t0)


def smoke_case(runtime: Runtime) -> SmokeCase:
    """A tiny two-view COMPLETER with the prediction term active from step 0 and one batch of 8 complete pairs."""
    torch.manual_seed(0)
    model = Completer(view_dims=[6, 5], d_z=4, hidden=[8, 8], predictor_hidden=[8, 8]).to(runtime.device)
    batch = (torch.rand(8, 6, device=runtime.device), torch.rand(8, 5, device=runtime.device))
    return SmokeCase(model=model, step_fn=step_fn_for(alpha=9.0, prediction_start_epoch=0, steps_per_epoch=1),
                     batch=batch)
