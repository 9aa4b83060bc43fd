"""SDD-FIQA demo: faces world -> recogniser -> pseudo-labels -> regressor -> EVRC on held-out identities against
sharpness, random rejection and the world's true quality (docs/methods/sdd_fiqa.md)."""

from __future__ import annotations

import time
from pathlib import Path

from scipy.stats import spearmanr

from lowlabel.engine.batches import TensorBatches
from lowlabel.engine.demo import DemoResult
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.runtime import Runtime
from lowlabel.methods.sdd_fiqa import data as fdata
from lowlabel.methods.sdd_fiqa.evaluation import evrc_table
from lowlabel.methods.sdd_fiqa.recipe import Config, RecognizerConfig, fit_regressor, world_pipeline

BATCH = 64


def demo_config(quick: bool) -> Config:
    """Demo settings: 32x32 faces, short schedules; lr 1e-3 instead of 1e-4 (a few hundred steps, not 20 epochs of
    MS1M). Many images per identity: with 8 per identity the regressor memorised its 800 training faces (Spearman
    with the true quality of held-out faces 0.22, below sharpness); with 16 it generalises (0.74) at the same number
    of steps (docs/methods/sdd_fiqa.md).

    Milestones: the official ones at 1/4 and 1/2 of the epochs, rounded down to whole epochs of the demo's run
    (quick: 300 steps = 6 epochs of 50 -> steps 50 and 150; full: 800 steps = 8 epochs of 93 -> steps 186 and 372),
    written as fractions of the run."""
    n_ids, per_id, steps = (200, 16, 300) if quick else (300, 20, 800)
    per_epoch = n_ids * per_id // BATCH
    epochs = steps // per_epoch
    milestones = [epochs // 4 * per_epoch / steps, epochs // 2 * per_epoch / steps]
    quiet = {"log_every": 10**9, "checkpoint_every": 10**9}
    return Config(image_size=32, width=16, batch_size=BATCH, world_identities=n_ids, world_per_identity=per_id,
                  recognizer=RecognizerConfig(train=TrainConfig(max_steps=steps, **quiet)),
                  train=TrainConfig(max_steps=steps, **quiet),
                  optim=OptimConfig(name="adam", lr=1e-3, betas=[0.9, 0.99], eps=1e-6, weight_decay=5e-4,
                                    schedule="step", milestones=milestones, gamma=0.1))


def run(*, quick: bool, out: Path, runtime: Runtime) -> DemoResult:
    """Faces world -> recogniser -> pseudo-labels -> regressor -> EVRC on held-out identities vs baselines."""
    t0 = time.perf_counter()
    cfg = demo_config(quick)
    made = world_pipeline(cfg, runtime)
    world, q = made["world"], made["pseudo"].float()
    rho = float(spearmanr(q, world["quality"]).statistic)
    source = TensorBatches([world["images"], q], cfg.batch_size, runtime, seed=cfg.train.seed, drop_last=True)
    model, _ = fit_regressor(cfg, source, runtime, run_dir=None, init=made["embedder"])
    test = fdata.faces_world(30 if quick else 50, 20, seed=777, size=cfg.image_size)
    rows, notes = evrc_table(test, embedder=made["embedder"], regressor=model, out=Path(out), device=runtime.device)
    rows["SDD-FIQA"]["spearman_pseudo_vs_true"] = rho
    notes.insert(0, f"Spearman(pseudo-labels, true quality) on the training world = {rho:.3f}")
    return DemoResult(slug="sdd_fiqa", metric="aoc_fmr1e-2", method="SDD-FIQA", baseline="sharpness", rows=rows,
                      notes=notes, seconds=time.perf_counter() - t0)


def figures(run_dir: Path) -> list[Path]:
    """The EVRC plots the demo wrote into `run_dir` (`evrc_fmr0.01.png`, `evrc_fmr0.001.png`); a training run
    writes none."""
    return sorted(Path(run_dir).glob("evrc_fmr*.png"))
