"""COMPLETER demo: the two-view digits world at missing rate 0.5, COMPLETER vs two k-means baselines over mask
seeds, and the figures of a run folder."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from lowlabel.engine.demo import DemoResult, mean_over_seeds
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.runtime import Runtime
from lowlabel.methods.completer.data import MultiView, digits_world, make_mask
from lowlabel.methods.completer.plots import plot_latents
from lowlabel.methods.completer.recipe import Config, DataConfig, EvalConfig, LossConfig, ModelConfig, run_once
from lowlabel.metrics.clustering import clustering_scores, kmeans

MISSING_RATE = 0.5


def demo_config(quick: bool = False) -> Config:
    """The spec's small CPU demo preset: AE [d, 256, 256, 256, 32], predictors [32, 64, 128, 64], Adam 1e-3,
    150 epochs with prediction from epoch 30 (quick: 60 epochs, prediction from epoch 20), no evaluation during
    training, seed 0."""
    return Config(
        data=DataConfig(missing_rate=MISSING_RATE),
        model=ModelConfig(d_z=32, hidden=[256, 256, 256], predictor_hidden=[64, 128, 64]),
        loss=LossConfig(prediction_start=20 / 60 if quick else 30 / 150),
        eval=EvalConfig(every_epochs=0),
        train=TrainConfig(epochs=60 if quick else 150, log_every=10_000, checkpoint_every=0, amp=False, seed=0),
        optim=OptimConfig(name="adam", lr=1e-3, fused=True),
    )


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


def figures(run_dir: Path) -> list[Path]:
    """The PNGs of a COMPLETER demo or `lowlabel completer cluster` folder (`latents_tsne.png`, `sweep.png`),
    sorted by name; a single training run writes none."""
    return sorted(Path(run_dir).glob("*.png"))


def run(*, quick: bool, out: Path, runtime: Runtime) -> DemoResult:
    """COMPLETER vs k-means baselines on the two-view digits world at missing rate 0.5, mean over mask seeds 1-3
    with `<metric>_std` (quick: seed 1 only, 60 epochs). Writes a t-SNE plot of the latents of the first seed."""
    t0 = time.perf_counter()
    out = Path(out)
    cfg = demo_config(quick)
    dataset = digits_world()
    runs: dict[str, list[dict[str, float]]] = {"completer": [], "kmeans_zero_fill": [], "kmeans_mean_impute": []}
    first = None
    for seed in (1,) if quick else (1, 2, 3):
        seed_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, mask_seed=seed))
        result = run_once(seed_cfg, dataset, runtime=runtime)
        first = first or result
        runs["completer"].append(result["scores"])
        mask = make_mask(dataset.labels.size, len(dataset.views), MISSING_RATE, seed)
        for name, scores in baselines(dataset, mask).items():
            runs[name].append(scores)
    plot_latents(first["embedding"], first["assignments"], out / "latents_tsne.png", title="COMPLETER on digits")
    notes = [f"two-view digits, missing rate {MISSING_RATE}, mask seeds {'1' if quick else '1-3'}, demo preset "
             f"({cfg.train.epochs} epochs, AE hidden {cfg.model.hidden}, d_z {cfg.model.d_z}, lr {cfg.optim.lr})"]
    return DemoResult(slug="completer", metric="acc", method="completer", baseline="kmeans_zero_fill",
                      rows=mean_over_seeds(runs), notes=notes, seconds=time.perf_counter() - t0)
