"""The DenseCL demo: same-budget pretraining of DenseCL and MoCo-v2 (lambda = 0) on the shapes world, then the
paper's kind of transfer: the whole backbone fine-tuned with a light FCN head on N labelled scenes (the same recipe
for DenseCL, MoCo-v2 and random init), mIoU on held-out scenes, over paired seeds and label budgets."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lowlabel.engine.demo import DemoResult, mean_over_seeds
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.methods.densecl.data import shapes_labelled
from lowlabel.methods.densecl.finetune import FinetuneConfig, finetune_miou
from lowlabel.methods.densecl.model import DenseCL
from lowlabel.methods.densecl.recipe import AugConfig, Config, ModelConfig, build_model, train
from lowlabel.report.figures import figure, save_figure

WORLD_SIZE = 64  # shapes-world images; the small-stem ResNet gives an 8x8 C5 map on them
CROP_SIZE = 48  # pretraining views (random resized crops of the 64 px images): 6x6 C5 map, 7x7 in the paper
STARTS = ("DenseCL", "MoCo-v2", "random init")
LAMBDAS = {"DenseCL": 0.5, "MoCo-v2": 0.0}
BUDGETS = (16, 64, 256)  # labelled scenes; all seeds at the first, seed 0 only at the others (full mode)
TEST_SCENES = 400


@dataclass(frozen=True)
class Worlds:
    """Shapes-world seeds of one paired run: unlabelled pretraining scenes, labelled fine-tuning scenes, test scenes."""

    pretrain: int
    finetune: int
    test: int


def evaluation_worlds(seed: int) -> Worlds:
    """The demo's worlds for seed 0, 1, 2: fixed before any result was seen and never used for a choice."""
    return Worlds(seed, 10_000 + seed, 20_000 + seed)


def tuning_worlds(seed: int) -> Worlds:
    """The worlds every choice was made on (benchmarks/densecl_demo.py --world tuning)."""
    return Worlds(100 + seed, 10_100 + seed, 30_100 + seed)


def demo_config(*, quick: bool, seed: int, lam: float) -> Config:
    """The CPU pretraining recipe. ResNet-18 layout at width 8 (stages 8-64 channels) with the small stem; neck
    128 -> 64; batch 32; SGD lr 0.3 per 256 images (the official COCO config's, scaled: 0.0375), cosine, momentum 0.9,
    wd 1e-4; m 0.99; tau 0.2; queues of 1024 keys (32 batches, as 65,536 keys are 256 iterations of the official
    batch); 2048 scenes of 64 px, 48 px views, blur sigma 0.1-1.0 px (the official 0.1-2.0 at 224 px, scaled).
    Steps: 100 (quick) or 300 per model. `seed` is the pretraining world and the run's seed."""
    return Config(
        model=ModelConfig(arch="resnet18", small_stem=True, width=8, hid_dim=128, out_dim=64),
        aug=AugConfig(image_size=CROP_SIZE, load_size=WORLD_SIZE, blur_sigma=[0.1, 1.0]),
        queue_size=1024, momentum=0.99, batch_size=32, loss_lambda=lam, synthetic_images=2048, num_workers=0,
        train=TrainConfig(max_steps=100 if quick else 300, log_every=10, checkpoint_every=100_000, seed=seed),
        optim=OptimConfig(name="sgd", lr=0.3, momentum=0.9, weight_decay=1e-4, schedule="cosine"),
    )


def finetune_config(seed: int) -> FinetuneConfig:
    """The one fine-tuning recipe of the demo, for every start and budget: `FinetuneConfig`'s defaults (200 steps of
    batch 16, SGD lr 0.05), head init and batch order from `seed`."""
    return FinetuneConfig(seed=seed)


def seeded_model(cfg: Config, seed: int) -> DenseCL:
    """`build_model(cfg)` with the initial weights of torch seed `seed`; the global generator is left as it was."""
    with seeded(seed):
        return build_model(cfg)


def pretrained_backbone(start: str, *, worlds: Worlds, seed: int, quick: bool, out: Path,
                        runtime: Runtime) -> torch.nn.Module:
    """The backbone a start gives: DenseCL or MoCo-v2 pretrained on `worlds.pretrain` (same budget, same initial
    weights of torch seed `seed`; logs in out/<start>/seed<seed>/metrics.jsonl), or 'random init' untrained."""
    cfg = demo_config(quick=quick, seed=worlds.pretrain, lam=LAMBDAS.get(start, 0.0))
    model = seeded_model(cfg, seed)
    if start in LAMBDAS:
        run_dir = out / start / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        train(cfg, data=None, run_dir=run_dir, runtime=runtime, resume=False, model=model)
    return model.encoder_q.backbone


def finetune_scores(backbone: torch.nn.Module, *, worlds: Worlds, seed: int, budgets: tuple[int, ...],
                    runtime: Runtime) -> dict[int, float]:
    """{N: test mIoU} of `backbone` fine-tuned (a fresh copy per N) on the first N scenes of `worlds.finetune`."""
    labelled = shapes_labelled(max(budgets), size=WORLD_SIZE, seed=worlds.finetune)
    test = shapes_labelled(TEST_SCENES, size=WORLD_SIZE, seed=worlds.test)
    return {n: finetune_miou(copy.deepcopy(backbone).to(runtime.device), labelled.first(n), test,
                             cfg=finetune_config(seed), runtime=runtime) for n in budgets}


def compare_starts(*, worlds: Worlds, seed: int, quick: bool, budgets: tuple[int, ...], out: Path,
                   runtime: Runtime) -> dict[str, dict[int, float]]:
    """Every start (`STARTS`) pretrained and fine-tuned on `worlds` for every N in `budgets`: {start: {N: mIoU}}."""
    return {start: finetune_scores(pretrained_backbone(start, worlds=worlds, seed=seed, quick=quick, out=out,
                                                       runtime=runtime),
                                   worlds=worlds, seed=seed, budgets=budgets, runtime=runtime)
            for start in STARTS}


def loss_curves(out: Path) -> dict[str, list[tuple[int, float]]]:
    """Global (and dense) InfoNCE per logged step of every pretraining run under `out`, weights undone (the
    trainer logs (1 - lambda) L_q and lambda L_r): {'<start>/seed<s>/global': [(step, loss), ...], ...}."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for log in sorted(out.glob("*/seed*/metrics.jsonl")):
        start = log.parent.parent.name
        lam = LAMBDAS.get(start, 0.0)
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "loss_contra_single" in r]
        key = f"{start}/{log.parent.name}"
        curves[f"{key}/global"] = [(r["step"], r["loss_contra_single"] / (1 - lam)) for r in rows]
        if lam > 0:
            curves[f"{key}/dense"] = [(r["step"], r["loss_contra_dense"] / lam) for r in rows]
    return curves


def plot_curves(results: dict[str, dict[int, list[float]]], curves: dict[str, list[tuple[int, float]]],
                queue_size: int, out: Path) -> Path:
    """Left: mIoU against labelled scenes per start (mean over the seeds run at that budget, bars: min-max);
    right: the pretraining InfoNCE curves against ln(K + 1). -> out/densecl_demo.png"""
    fig, (left, right) = figure(1, 2, figsize=(11, 3.6))
    colours = {"DenseCL": "tab:blue", "MoCo-v2": "tab:orange", "random init": "tab:gray"}
    for name, per_budget in results.items():
        budgets = sorted(per_budget)
        means = [sum(per_budget[n]) / len(per_budget[n]) for n in budgets]
        spread = [[max(m - min(per_budget[n]), 0.0) for m, n in zip(means, budgets, strict=True)],
                  [max(max(per_budget[n]) - m, 0.0) for m, n in zip(means, budgets, strict=True)]]
        left.errorbar(budgets, means, yerr=spread, marker="o", capsize=3, label=name, color=colours.get(name))
    left.set_xscale("log", base=2)
    left.set_xlabel("labelled scenes (fine-tuning)")
    left.set_ylabel("test mIoU")
    left.legend(fontsize=8)
    for key, points in curves.items():
        start, _, kind = key.split("/")
        right.plot([p[0] for p in points], [p[1] for p in points], color=colours.get(start), alpha=0.7,
                   linestyle="-" if kind == "global" else ":", label=f"{start} {kind}" if "seed0" in key else None)
    right.axhline(math.log(queue_size + 1), color="black", linewidth=0.8, linestyle="--", label="ln(K + 1)")
    right.set_xlabel("pretraining step")
    right.set_ylabel("InfoNCE")
    right.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out / "densecl_demo.png", dpi=100)


def figures(run_dir: Path) -> list[Path]:
    """The PNGs of a DenseCL demo folder (`densecl_demo.png`, written by `run`); a training run writes none."""
    return sorted(Path(run_dir).glob("*.png"))


def summarise(results: dict[str, dict[int, list[float]]], curves: dict[str, list[tuple[int, float]]], *,
              quick: bool, tuning: bool, out: Path, seconds: float) -> DemoResult:
    """The demo's table from {start: {N: [mIoU per seed]}} (seeds in one order for every start): rows are mean
    (and population std) over the seeds at the smallest budget; notes give wins, every seed and budget, the final
    global InfoNCE of every pretraining run; writes out/densecl_demo.png."""
    queue = demo_config(quick=quick, seed=0, lam=0.5).queue_size
    plot_curves(results, curves, queue, out)
    smallest = min(results["DenseCL"])
    per_seed = {name: results[name][smallest] for name in STARTS}
    rows = mean_over_seeds({name: [{"miou": m} for m in values] for name, values in per_seed.items()})
    n_seeds = len(per_seed["DenseCL"])
    wins = {rival: sum(d > r for d, r in zip(per_seed["DenseCL"], per_seed[rival], strict=True))
            for rival in STARTS[1:]}
    steps = demo_config(quick=quick, seed=0, lam=0.5).train.max_steps
    ft = finetune_config(0)
    notes = [f"{n_seeds} paired seed(s) on the {'tuning' if tuning else 'evaluation'} worlds; {steps} pretraining "
             f"steps of batch 32 per model; whole network + FCN head fine-tuned on {smallest} labelled scenes "
             f"({ft.steps} steps of batch {ft.batch_size}, lr {ft.lr}), mIoU on {TEST_SCENES} held-out scenes",
             "DenseCL ahead in " + ", ".join(f"{w}/{n_seeds} seeds vs {rival}" for rival, w in wins.items()),
             "mIoU per seed and budget: " + "; ".join(
                 f"{name} N={n}: " + ", ".join(f"{m:.4f}" for m in values)
                 for name, per_budget in results.items() for n, values in sorted(per_budget.items())),
             f"final global InfoNCE (ln(K + 1) = {math.log(queue + 1):.2f}): " + ", ".join(
                 f"{key.rsplit('/', 1)[0]} {points[-1][1]:.2f}" for key, points in curves.items()
                 if key.endswith("global") and points),
             f"wall {seconds:.0f} s ({torch.get_num_threads()} torch threads)"]
    return DemoResult(slug="densecl", metric="miou", method="DenseCL", baseline="MoCo-v2", rows=rows, notes=notes,
                      seconds=seconds)


def seed_budgets(seed: int, *, quick: bool) -> tuple[int, ...]:
    """Label budgets run for `seed`: the smallest only in quick mode and for seeds other than 0."""
    return BUDGETS[:1] if quick or seed != 0 else BUDGETS


def run(*, quick: bool, out: Path, runtime: Runtime, seeds: tuple[int, ...] | None = None,
        tuning: bool = False) -> DemoResult:
    """DenseCL vs MoCo-v2 vs random init after fine-tuning, over paired seeds (seed 0 in quick mode, 0-2 full) on
    the evaluation worlds (or, with `tuning`, the tuning worlds); see `summarise`."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = seeds if seeds is not None else ((0,) if quick else (0, 1, 2))
    results: dict[str, dict[int, list[float]]] = {name: {} for name in STARTS}
    for seed in seeds:
        worlds = tuning_worlds(seed) if tuning else evaluation_worlds(seed)
        scores = compare_starts(worlds=worlds, seed=seed, quick=quick, budgets=seed_budgets(seed, quick=quick),
                                out=out, runtime=runtime)
        for name, per_budget in scores.items():
            for n, miou in per_budget.items():
                results[name].setdefault(n, []).append(miou)
    return summarise(results, loss_curves(out), quick=quick, tuning=tuning, out=out,
                     seconds=time.perf_counter() - t0)
