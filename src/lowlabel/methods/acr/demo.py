"""ACR demo on the shapes world: a small ResNet pretrained with labels on the source domain (9 shapes), transferred
to the target domain (textured backgrounds, shifted palette) with 2 labels per class and the whole target training
pool unlabelled. Four runs per seed with the same budget, optimiser and batches: fine-tune, fine-tune + AKC + ARC,
FixMatch, FixMatch + AKC + ARC (full mode; quick mode runs the first two on one seed). Full mode also runs
fine-tune + AKC + ARC at the official λ_ARC = 50 to measure the ARC weight on these 64-d features.

Settings (λ_AKC, λ_ARC, lr, steps) were chosen on the TUNING world (world seed 1, run seed 11; `tune`); the
evaluation world (world seed 0, run seeds 1, 2, 3) was run once after (docs/methods/acr.md).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from lowlabel.engine.demo import DemoResult, mean_over_seeds
from lowlabel.engine.recipe import TrainConfig
from lowlabel.engine.runtime import Runtime
from lowlabel.files import write_json
from lowlabel.methods.acr import recipe, source
from lowlabel.report.figures import figure, save_figure

EVAL_WORLD, TUNING_WORLD = 0, 1
EVAL_SEEDS, TUNING_SEED = (1, 2, 3), 11
LAMBDA_AKC, LAMBDA_ARC = 100.0, 5.0  # chosen on the tuning world (official 1 and 50: for 2048-d ResNet-50 maps)
FULL_STEPS, QUICK_STEPS = 200, 120
METHOD, BASELINE = "fine-tune + AKC + ARC", "fine-tune"


def demo_config(*, world: int, seed: int, steps: int, quick: bool) -> recipe.Config:
    """Width-8 ResNet (one BasicBlock per stage, 3x3 stem: 64-d layer4 maps of 4x4) on 32 px crops of 36 px scenes,
    16 labelled + 32 unlabelled per step, SGD 0.03 Nesterov with cosine decay, test accuracy every 20 steps."""
    synthetic = recipe.SyntheticConfig(size=32, n_source=3000, source_steps=400, n_train=600,
                                       n_test=300 if quick else 500, seed=world)
    base = recipe.Config()
    return recipe.Config(
        backbone="resnet", resnet_layers=[1, 1, 1, 1], bottleneck=False, width=8, small_stem=True, image_size=32,
        resize=36, labelled_per_class=2, labelled_bs=16, unlabelled_bs=32, akc_gate_classes=0,
        lambda_akc=LAMBDA_AKC, lambda_arc=LAMBDA_ARC, synthetic=synthetic,
        train=TrainConfig(max_steps=steps, log_every=20, eval_every=20, checkpoint_every=10**9, seed=seed),
        optim=dataclasses.replace(base.optim, lr=0.03, schedule="cosine"))  # the schedule its runs were tuned with


def variants(cfg: recipe.Config, quick: bool) -> dict[str, recipe.Config]:
    plain = dataclasses.replace(cfg, lambda_akc=0.0, lambda_arc=0.0)
    out = {BASELINE: plain, METHOD: cfg}
    if not quick:
        out["FixMatch"] = dataclasses.replace(plain, ssl="fixmatch")
        out["FixMatch + AKC + ARC"] = dataclasses.replace(cfg, ssl="fixmatch")
        out["fine-tune + AKC + ARC, λ_ARC 50"] = dataclasses.replace(cfg, lambda_arc=50.0)
    return out


def _folder(name: str) -> str:
    return name.replace(" + ", "_").replace(", ", "_").replace(" ", "").replace("λ_ARC", "arc")


def run_world(out: Path, runtime: Runtime, *, world: int, seeds: tuple[int, ...], steps: int, quick: bool,
              configs: dict[str, dict] | None = None) -> dict[str, list[dict[str, float]]]:
    """Every variant on every seed of one world (the source model pretrained once per world); `configs` replaces
    the variants by {name: overrides of the demo config}."""
    runs: dict[str, list[dict[str, float]]] = {}
    source_path = out / f"source_world{world}.pt"
    for seed in seeds:
        cfg = demo_config(world=world, seed=seed, steps=steps, quick=quick)
        if not source_path.is_file():
            s = cfg.synthetic
            source.pretrain_shapes(source_path, layers=list(cfg.resnet_layers), width=cfg.width,
                                   small_stem=cfg.small_stem, crop=cfg.image_size, size=s.size, side=cfg.resize,
                                   n=s.n_source, steps=s.source_steps, lr=s.source_lr, seed=world * 3,
                                   runtime=runtime)
        cfg = dataclasses.replace(cfg, source=str(source_path))
        chosen = variants(cfg, quick) if configs is None else {
            k: dataclasses.replace(cfg, **v) for k, v in configs.items()}
        prepared = recipe.load_data(cfg, None)
        for name, variant in chosen.items():
            run_dir = out / _folder(name) / f"seed{seed}"
            _, summary = recipe.train_model(variant, data=None, run_dir=run_dir, runtime=runtime, resume=False,
                                            prepared=prepared)
            runs.setdefault(name, []).append({"accuracy": summary["test_accuracy"]})
    return runs


def source_head_accuracy(out: Path, *, world: int, quick: bool) -> float:
    """Target test accuracy of the source model with its own 9-way head, no target label used: the reference that
    shows how much of the source model fine-tuning keeps (the shapes world's source and target share the classes)."""
    import torch

    from lowlabel.methods.acr import augment

    cfg = demo_config(world=world, seed=EVAL_SEEDS[0], steps=1, quick=quick)
    prepared = recipe.load_data(cfg, None)
    backbone, head = source.from_file(Path(out) / f"source_world{world}.pt")
    backbone.eval()
    with torch.no_grad():
        feats = backbone.forward_features(augment.center(prepared.test, cfg.image_size)).mean(dim=(2, 3))
        return float((head(feats).argmax(1) == prepared.test_labels).float().mean())


def run(*, quick: bool, out: Path, runtime: Runtime) -> DemoResult:
    """The evaluation world: quick = fine-tune vs fine-tune + AKC + ARC on seed 1 (120 steps); full = the four runs
    and the λ_ARC = 50 row on seeds 1, 2, 3 (200 steps). Metric: target test accuracy of the last step."""
    t0 = time.perf_counter()
    out = Path(out)
    seeds = EVAL_SEEDS[:1] if quick else EVAL_SEEDS
    runs = run_world(out, runtime, world=EVAL_WORLD, seeds=seeds, steps=QUICK_STEPS if quick else FULL_STEPS,
                     quick=quick)
    rows = mean_over_seeds(runs)
    write_json(out / "rows.json", {"mean": rows, "per_seed": runs, "seeds": list(seeds)})
    figures(out)

    def per_seed(name: str) -> str:
        return ", ".join(f"{r['accuracy']:.3f}" for r in runs[name])

    def wins(a: str, b: str) -> str:
        n = sum(x["accuracy"] > y["accuracy"] for x, y in zip(runs[a], runs[b], strict=True))
        return f"{a} beats {b} in {n} of {len(seeds)} seeds"

    notes = [f"seeds {list(seeds)}; 2 labels per class (18), 600 unlabelled target scenes, "
             f"{'300' if quick else '500'} test scenes; λ_AKC {LAMBDA_AKC:g}, λ_ARC {LAMBDA_ARC:g} (tuning world)",
             "per-seed accuracy: " + "; ".join(f"{k} {per_seed(k)}" for k in runs), wins(METHOD, BASELINE),
             f"source model with its own head (no target label): "
             f"{source_head_accuracy(out, world=EVAL_WORLD, quick=quick):.3f}"]
    if not quick:
        notes += [wins("FixMatch + AKC + ARC", "FixMatch"), wins(METHOD, "fine-tune + AKC + ARC, λ_ARC 50")]
    return DemoResult(slug="acr", metric="accuracy", method=METHOD, baseline=BASELINE, rows=rows, notes=notes,
                      seconds=time.perf_counter() - t0)


TUNING_GRID = {"fine-tune": {"lambda_akc": 0.0, "lambda_arc": 0.0},
               "akc1_arc50": {"lambda_akc": 1.0, "lambda_arc": 50.0},
               "akc100_arc50": {"lambda_akc": 100.0, "lambda_arc": 50.0},
               "akc100_arc5": {"lambda_akc": 100.0, "lambda_arc": 5.0},
               "akc100_arc1": {"lambda_akc": 100.0, "lambda_arc": 1.0},
               "akc0_arc5": {"lambda_akc": 0.0, "lambda_arc": 5.0},
               "akc100_arc0": {"lambda_akc": 100.0, "lambda_arc": 0.0}}


def tune(out: Path, runtime: Runtime, result: Path | None = None) -> dict[str, list[dict[str, float]]]:
    """The weight grid on the tuning world (world 1, seed 11, 200 steps) that chose LAMBDA_AKC and LAMBDA_ARC;
    written to `result` (JSON) when given."""
    runs = run_world(Path(out), runtime, world=TUNING_WORLD, seeds=(TUNING_SEED,), steps=FULL_STEPS, quick=False,
                     configs=TUNING_GRID)
    if result is not None:
        write_json(result, {"world": TUNING_WORLD, "seed": TUNING_SEED, "steps": FULL_STEPS, "runs": runs})
    return runs


def accuracy_curves(run_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{variant: {seed folder: [(step, test accuracy)]}} from the metrics.jsonl files under a demo folder."""
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for metrics in sorted(Path(run_dir).glob("*/seed*/metrics.jsonl")):
        points = [(r["step"], r["eval/accuracy"]) for r in map(json.loads, metrics.read_text().splitlines())
                  if "eval/accuracy" in r]
        if points:
            curves.setdefault(metrics.parent.parent.name, {})[metrics.parent.name] = points
    return curves


def figures(run_dir: Path) -> list[Path]:
    """acr_accuracy.png: target test accuracy over training, one line per run (colour = variant, one line per
    seed). Nothing when the folder holds no ACR demo runs."""
    curves = accuracy_curves(run_dir)
    if not curves:
        return []
    fig, ax = figure(figsize=(7.0, 4.5))
    for i, (variant, seeds) in enumerate(sorted(curves.items())):
        for j, points in enumerate(seeds.values()):
            steps, acc = zip(*points, strict=True)
            ax.plot(steps, acc, color=f"C{i}", alpha=0.85, label=variant if j == 0 else None)
    ax.set_xlabel("training step")
    ax.set_ylabel("target test accuracy")
    ax.set_title("ACR on the shapes world (source -> target domain, 2 labels per class)")
    ax.legend(fontsize=8)
    return [save_figure(fig, Path(run_dir) / "acr_accuracy.png")]
