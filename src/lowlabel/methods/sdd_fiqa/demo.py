"""SDD-FIQA demo: faces world -> recogniser -> pseudo-labels -> regressor -> EVRC on held-out identities, against
the spec's intra-class-only ablation (same regressor, same budget, labels without the Neg-Sim distribution), the
recognition embedding's norm, a noise-robust sharpness measure, random rejection and the world's true quality.

Two worlds of the same generator (docs/methods/sdd_fiqa.md, "Demo"): the TUNING world (training world seed s,
held-out identities seed 777 + s) on which every choice was made (world size, steps, lr, the sharpness scale), and
the EVALUATION world (seeds 1000 + s and 2000 + s), run once with the choices fixed. `run` is the evaluation world:
quick = seed 0 (fixed before any evaluation run), full = seeds 0, 1, 2.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from lowlabel.engine.batches import TensorBatches, embed
from lowlabel.engine.checkpoint import newest_checkpoint
from lowlabel.engine.config import load_config
from lowlabel.engine.demo import DemoResult, mean_over_seeds
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.rundir import recorded_data
from lowlabel.engine.runtime import Runtime
from lowlabel.files import write_json
from lowlabel.methods.sdd_fiqa import data as fdata
from lowlabel.methods.sdd_fiqa import recipe
from lowlabel.methods.sdd_fiqa.evaluation import (
    evrc_report,
    evrc_table,
    folder_pairs,
    laplacian_sharpness,
    smoothed_laplacian_energy,
)
from lowlabel.methods.sdd_fiqa.losses import intra_class_labels
from lowlabel.methods.sdd_fiqa.recipe import Config, RecognizerConfig, fit_regressor, world_pipeline

BATCH = 64
WORLDS: dict[str, tuple[int, int]] = {"tuning": (0, 777), "evaluation": (1000, 2000)}
"""world -> seed offsets of (training identities, held-out identities); seed s uses offset + s."""
SEEDS: tuple[int, ...] = (0, 1, 2)
SHARPNESS_SIGMAS: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0)
SHARPNESS_SIGMA = 3.0  # chosen on the tuning world (benchmarks/results/sdd_fiqa_demo_tuning_quick.json)
METRIC = "aoc_fmr1e-2"
METHOD, ABLATION, NORM = "SDD-FIQA", "intra-class only (ablation)", "embedding norm"
LAPLACIAN, TRUE, RANDOM = "variance of the Laplacian", "true quality (upper reference)", "random"
EVRC_MAX_IMAGES = 2000  # the EVRC of a run on a user's folder scores at most this many of its images


def sharpness_name(sigma: float) -> str:
    return f"sharpness (LoG energy, σ {sigma:g})"


BASELINES: tuple[str, ...] = (ABLATION, NORM, sharpness_name(SHARPNESS_SIGMA))


def demo_config(quick: bool, seed: int = 0) -> Config:
    """Demo settings: 32x32 faces, short schedules; lr 1e-3 instead of 1e-4 (a few hundred steps, not 20 epochs of
    MS1M); the seed drives the recogniser, the pseudo-label draws and the regressor. Many images per identity: with 8
    per identity the regressor memorised its 800 training faces on the tuning world (docs/methods/sdd_fiqa.md).

    Milestones: the official ones at 1/4 and 1/2 of the epochs, rounded down to whole epochs of the demo's run
    (quick: 300 steps = 6 epochs of 50 -> steps 50 and 150; full: 800 steps = 8 epochs of 93 -> steps 186 and 372),
    written as fractions of the run."""
    n_ids, per_id, steps = (200, 16, 300) if quick else (300, 20, 800)
    per_epoch = n_ids * per_id // BATCH
    epochs = steps // per_epoch
    milestones = [epochs // 4 * per_epoch / steps, epochs // 2 * per_epoch / steps]
    quiet = {"log_every": 10**9, "checkpoint_every": 10**9, "seed": seed}
    cfg = Config(image_size=32, width=16, batch_size=BATCH, world_identities=n_ids, world_per_identity=per_id,
                 recognizer=RecognizerConfig(train=TrainConfig(max_steps=steps, **quiet)),
                 train=TrainConfig(max_steps=steps, **quiet),
                 optim=OptimConfig(name="adam", lr=1e-3, betas=[0.9, 0.99], eps=1e-6, weight_decay=5e-4,
                                   schedule="step", milestones=milestones, gamma=0.1))
    return dataclasses.replace(cfg, labels=dataclasses.replace(cfg.labels, seed=seed))


def run_seed(*, quick: bool, world: str, seed: int, runtime: Runtime, out: Path | None,
             sigmas: tuple[float, ...] = (SHARPNESS_SIGMA,)) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """One paired seed: every score on the same held-out pairs of `world`. Returns the AOC rows and Spearman
    diagnostics (pseudo-labels vs true quality on the training world; scores vs true quality on held-out faces)."""
    cfg = demo_config(quick, seed)
    train_offset, test_offset = WORLDS[world]
    made = world_pipeline(cfg, runtime, seed=train_offset + seed)
    train_world, embedder = made["world"], made["embedder"]
    labels = {METHOD: made["pseudo"].float()}
    emb = embed(embedder, train_world["images"], device=runtime.device).cpu()
    lc = cfg.labels
    labels[ABLATION] = intra_class_labels(emb, train_world["identity"], lc.n_pos, lc.repeats, lc.seed,
                                          pool_size=lc.pool_size).float()
    test = fdata.faces_world(30 if quick else 50, 20, seed=test_offset + seed, size=cfg.image_size)
    scores: dict[str, np.ndarray] = {}
    for name, q in labels.items():
        source = TensorBatches([train_world["images"], q], cfg.batch_size, runtime, seed=cfg.train.seed,
                               drop_last=True)
        model, _ = fit_regressor(cfg, source, runtime, run_dir=None, init=embedder)
        scores[name] = embed(model, test["images"], device=runtime.device).cpu().numpy()
    scores[NORM] = embed(embedder, test["images"], device=runtime.device).cpu().norm(dim=1).numpy()
    u8 = test["uint8"].numpy()
    scores.update({sharpness_name(s): smoothed_laplacian_energy(u8, s) for s in sigmas})
    scores[LAPLACIAN] = laplacian_sharpness(u8)
    scores[RANDOM] = np.random.default_rng(seed).random(len(u8))
    scores[TRUE] = test["quality"].numpy()
    rows, _ = evrc_table(test, scores, embedder=embedder, out=out, device=runtime.device,
                         plotted=(METHOD, *BASELINES, RANDOM, TRUE))
    truth = train_world["quality"]
    diagnostics = {f"spearman_labels_vs_true[{k}]": float(spearmanr(v, truth).statistic) for k, v in labels.items()}
    diagnostics.update({f"spearman_heldout_vs_true[{k}]": float(spearmanr(v, scores[TRUE]).statistic)
                        for k, v in scores.items() if k not in (TRUE, RANDOM)})
    return rows, diagnostics


def run_world(*, quick: bool, world: str, seeds: tuple[int, ...], runtime: Runtime, out: Path,
              sigmas: tuple[float, ...] = (SHARPNESS_SIGMA,)) -> dict:
    """Every seed of `world`: per-seed rows, means with spreads, and how many seeds SDD-FIQA wins against each other
    score (paired: same recogniser, pairs and degradations); figures of the first seed go to `out`."""
    per_seed: dict[str, list[dict[str, float]]] = {}
    diagnostics: list[dict[str, float]] = []
    for k, seed in enumerate(seeds):
        rows, diag = run_seed(quick=quick, world=world, seed=seed, runtime=runtime, out=out if k == 0 else None,
                              sigmas=sigmas)
        for name, row in rows.items():
            per_seed.setdefault(name, []).append(row)
        diagnostics.append(diag)
    wins = {name: {metric: sum(a[metric] > b[metric] for a, b in zip(per_seed[METHOD], runs, strict=True))
                   for metric in runs[0]} for name, runs in per_seed.items() if name != METHOD}
    return {"world": world, "quick": quick, "seeds": list(seeds), "seed_offsets": WORLDS[world],
            "mean": mean_over_seeds(per_seed), "per_seed": per_seed, "sdd_wins": wins,
            "diagnostics": {k: statistics.fmean(d[k] for d in diagnostics) for k in diagnostics[0]}}


def run(*, quick: bool, out: Path, runtime: Runtime) -> DemoResult:
    """The evaluation world with the tuning world's choices: quick = seed 0, full = seeds 0, 1, 2. The named
    baseline is the intra-class-only ablation (the strongest in the full setting, where SDD-FIQA loses to it); the
    floor is random rejection; the notes give wins against every baseline."""
    t0 = time.perf_counter()
    out = Path(out)
    seeds = SEEDS[:1] if quick else SEEDS
    result = run_world(quick=quick, world="evaluation", seeds=seeds, runtime=runtime, out=out)
    write_json(out / "rows.json", result)
    per_seed = ", ".join(f"{r[METRIC]:.3f}" for r in result["per_seed"][METHOD])
    notes = [f"evaluation world, seeds {list(seeds)}; {METHOD} {METRIC} per seed: {per_seed}"]
    notes += [f"{METHOD} beats {name} in {result['sdd_wins'][name][METRIC]} of {len(seeds)} seeds"
              for name in (*BASELINES, LAPLACIAN, RANDOM, TRUE)]
    notes.append("Spearman of the pseudo-labels with the true quality (training world): "
                 f"{result['diagnostics'][f'spearman_labels_vs_true[{METHOD}]']:.3f}")
    return DemoResult(slug="sdd_fiqa", metric=METRIC, method=METHOD, baseline=ABLATION, floor=RANDOM,
                      rows=result["mean"], notes=notes, seconds=time.perf_counter() - t0)


def _first_identities(folder: fdata.IdentityFolder, max_images: int) -> fdata.IdentityFolder:
    """The leading identities of `folder` (whole ones, in folder order) up to `max_images` images (at least one)."""
    counts = np.bincount(folder.labels, minlength=len(folder.names))
    keep = max(int(np.searchsorted(np.cumsum(counts), max_images, side="right")), 1)
    n = int(counts[:keep].sum())
    return fdata.IdentityFolder(folder.paths[:n], folder.labels[:n], folder.names[:keep])


def checkpoint_evrc(cfg: Config, *, checkpoint: Path, data: Path | None, recognizer: str, out: Path,
                    fmr: float = 1e-2, max_images: int = EVRC_MAX_IMAGES) -> Path:
    """The EVRC plot (and its .json) of a trained regressor's scores, pairs compared by `recognizer` (a TorchScript
    file, or 'dlib'): on the held-out faces world of `evaluate` (data None), or on the leading identities of the
    folder `data` (whole identities, at most `max_images` images; the regressor was trained on them, and the .json
    records which pairs were used). Pair quality is the lower score of the two images (spec)."""
    model = load_model(recipe.build_model, cfg, checkpoint, "cpu")
    if data is None:
        world = fdata.faces_world(20, 10, seed=1001, size=cfg.image_size)
        images, labels = world["images"], world["identity"].numpy()
        emb = embed(torch.jit.load(recognizer, map_location="cpu"), images).numpy()
        where = "held-out faces world"
    else:
        folder = _first_identities(fdata.read_identity_folders(data), max_images)
        images, labels = fdata.load_images(folder.paths, cfg.image_size), folder.labels
        emb = fdata.folder_embeddings(folder, data, recognizer=recognizer, embeddings=None, size=cfg.image_size,
                                      cache_dir=Path(data) / ".lowlabel_cache")
        where = f"{len(folder.paths)} training images of {data}"
    quality = embed(model, images).numpy()
    table = folder_pairs(labels, emb, quality, max_genuine=100_000, max_impostor=1_000_000, seed=0)
    evrc_report(table, out, fmr=fmr, fixed_threshold=False,
                source={"checkpoint": str(checkpoint), "pairs": where, "recognizer": recognizer},
                label=f"{checkpoint.stem} on the {where if data is None else Path(data).name + ' folder'}")
    return Path(out)


def figures(run_dir: Path) -> list[Path]:
    """The EVRC plots of a demo folder (`evrc_fmr0.01.png`, `evrc_fmr0.001.png`, written by `run`). A training run
    folder without one gets `evrc_fmr0.01.png` of its newest checkpoint (`checkpoint_evrc`: the held-out
    faces world, or the run's recorded folder compared by the recogniser that started the trunk, dlib when none did),
    so the report shows the method's own figure; training pays nothing for it."""
    run_dir = Path(run_dir)
    found = sorted(run_dir.glob("evrc_fmr*.png"))
    newest = newest_checkpoint(run_dir)
    if found or newest is None or not (run_dir / "config.yaml").is_file():
        return found
    cfg = load_config(Config, run_dir / "config.yaml")
    data = recorded_data(run_dir, "sdd_fiqa")[1]
    if data is None:
        recognizer = str(run_dir / recipe.WORLD_RECOGNIZER)
        if not Path(recognizer).is_file():  # a run made before the recogniser was kept
            return found
    else:
        recognizer = "dlib" if cfg.init_from in ("", "none") else cfg.init_from
    return [checkpoint_evrc(cfg, checkpoint=newest, data=data, recognizer=recognizer,
                            out=run_dir / "evrc_fmr0.01.png")]

