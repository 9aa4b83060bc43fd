"""The DenseCL demo: same-budget pretraining of DenseCL and MoCo-v2 (lambda = 0) on the shapes world, then frozen
linear probes (per-pixel segmentation mIoU, object class accuracy) against random init and a trivial predictor,
averaged over seeds."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch

from lowlabel.engine.demo import DemoResult, mean_over_seeds
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.runtime import Runtime
from lowlabel.methods.densecl.data import probe_data
from lowlabel.methods.densecl.model import DenseCL
from lowlabel.methods.densecl.recipe import AugConfig, Config, ModelConfig, build_model, probe_scores, train
from lowlabel.metrics.segmentation import confusion_miou
from lowlabel.report.figures import figure, save_figure

WORLD_SIZE = 64  # shapes-world images; the small-stem ResNet gives an 8x8 C5 map on them
CROP_SIZE = 48  # pretraining views (random resized crops of the 64 px images): 6x6 C5 map, 49 in the paper
TRIVIAL = "background only"


def demo_config(*, quick: bool, seed: int, lam: float) -> Config:
    """The CPU demo recipe. ResNet-18 layout at width 8 (stages 8-64 channels) with the small stem; neck 128 -> 64;
    batch 32; SGD lr 0.3 per 256 images (the official COCO config's, scaled: 0.0375), cosine, momentum 0.9, wd 1e-4;
    m 0.99; tau 0.2; queues of 1024 keys (32 batches, as 65,536 keys are 256 iterations of the official batch; the
    queue is refilled about 6 times in the full run); 64 px images, 48 px views, blur sigma 0.1-1.0 px (the official
    0.1-2.0 at 224 px, scaled). Steps: 100 (quick) or 200 per model, sized to the demo's time budget."""
    return Config(
        model=ModelConfig(arch="resnet18", small_stem=True, width=8, hid_dim=128, out_dim=64),
        aug=AugConfig(image_size=CROP_SIZE, load_size=WORLD_SIZE, blur_sigma=[0.1, 1.0]),
        queue_size=1024, momentum=0.99, batch_size=32, loss_lambda=lam, synthetic_images=2048, num_workers=0,
        train=TrainConfig(max_steps=100 if quick else 200, log_every=50, checkpoint_every=100_000, seed=seed),
        optim=OptimConfig(name="sgd", lr=0.3, momentum=0.9, weight_decay=1e-4, schedule="cosine"),
    )


def seeded_model(cfg: Config, seed: int) -> DenseCL:
    """`build_model(cfg)` with the initial weights of torch seed `seed`; the global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(cfg)


def trivial_scores(*, size: int, seed: int) -> dict[str, float]:
    """The floor: every pixel background (mIoU) and every image the most frequent training class (accuracy)."""
    tr, te = probe_data(size, seed)
    miou = confusion_miou(torch.zeros_like(te.semantic), te.semantic, tr.n_seg_classes)
    tr, te = probe_data(size, seed, single_object=True)
    majority = torch.bincount(tr.shape).argmax()
    return {"miou": miou, "class_acc": float((te.shape == majority).float().mean())}


def _plot(rows: dict[str, dict[str, float]], out: Path) -> Path:
    """Bar charts of mIoU and class accuracy per backbone (error bars: std over seeds) -> out/densecl_demo.png."""
    fig, axes = figure(1, 2, figsize=(10, 3.2))
    names = list(rows)
    for ax, metric in zip(axes, ("miou", "class_acc"), strict=True):
        ax.bar(names, [rows[n][metric] for n in names], yerr=[rows[n].get(f"{metric}_std", 0.0) for n in names],
               color=["tab:blue", "tab:orange", "tab:gray", "lightgray"][: len(names)])
        ax.set_title(metric)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return save_figure(fig, out / "densecl_demo.png", dpi=100)


def figures(run_dir: Path) -> list[Path]:
    """The PNGs of a DenseCL demo folder (`densecl_demo.png`, written by `run`); a training run writes none."""
    return sorted(Path(run_dir).glob("*.png"))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(*, quick: bool, out: Path, runtime: Runtime) -> DemoResult:
    """Pretrain DenseCL and MoCo-v2 on the shapes world with the same budget, probe them, random init and the trivial
    floor; rows hold means (and population stds) over 1 seed (quick) or 3 seeds (full)."""
    t0, c0 = time.perf_counter(), _cpu_seconds()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [0] if quick else [0, 1, 2]
    scores: dict[str, list[dict[str, float]]] = {"DenseCL": [], "MoCo-v2": [], "random init": [], TRIVIAL: []}
    for seed in seeds:
        for name, lam in (("DenseCL", 0.5), ("MoCo-v2", 0.0)):
            cfg = demo_config(quick=quick, seed=seed, lam=lam)
            model = seeded_model(cfg, seed)
            run_dir = out / name.replace(" ", "_") / f"seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            train(cfg, data=None, run_dir=run_dir, runtime=runtime, resume=False, model=model)
            scores[name].append(probe_scores(model.encoder_q.backbone, size=WORLD_SIZE, seed=seed,
                                             device=runtime.device))
        random_backbone = seeded_model(demo_config(quick=quick, seed=seed, lam=0.0), seed).encoder_q.backbone
        scores["random init"].append(probe_scores(random_backbone.to(runtime.device), size=WORLD_SIZE, seed=seed,
                                                  device=runtime.device))
        scores[TRIVIAL].append(trivial_scores(size=WORLD_SIZE, seed=seed))
    rows = mean_over_seeds(scores)
    _plot(rows, out)
    steps = demo_config(quick=quick, seed=0, lam=0.5).train.max_steps
    notes = [f"{len(seeds)} seed(s); {steps} pretraining steps of batch 32 ({CROP_SIZE} px views of {WORLD_SIZE} px "
             f"shapes scenes) per model; probes on frozen C5 maps (8x8), 800 labelled scenes to fit, 400 to test "
             "(one-object scenes for the class probe)",
             "per-seed mIoU: " + "; ".join(f"{name} " + ", ".join(f"{r['miou']:.4f}" for r in runs)
                                           for name, runs in scores.items()),
             f"wall {time.perf_counter() - t0:.0f} s, CPU {_cpu_seconds() - c0:.0f} s "
             f"({torch.get_num_threads()} torch threads)"]
    return DemoResult(slug="densecl", metric="miou", method="DenseCL", baseline="MoCo-v2", rows=rows, notes=notes,
                      seconds=time.perf_counter() - t0)
