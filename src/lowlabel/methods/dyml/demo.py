"""DyML demo: CSL against fine-only CosFace (the ablation without the cross-scale terms), the per-level sum of
CosFace losses and the per-level sum of Multi-Similarity losses on the shapes world, open-set (issue 19);
scikit-learn's digits world on request (`worlds`). The floor row is the untrained network, scored the same way.

Every model has the same ConvNet, embedding, sampler (16 classes x 4 images), optimiser, steps and seed; test
fine classes are never seen in training; metrics per level leave-one-out on the test side (worlds.py for the
hierarchies). Budget and learning rates were chosen on the tuning world (shapes seed 100: docs/methods/dyml.md,
"Tuning"); the evaluation worlds are seeds 0, 1, 2, run once.
"""

from __future__ import annotations

import time
from pathlib import Path

from lowlabel.engine.demo import DemoResult, mean_over_seeds
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.runtime import Runtime
from lowlabel.files import write_json
from lowlabel.methods.dyml import recipe

MODELS: dict[str, str] = {"CSL": "csl", "fine-only CosFace": "fine_only", "per-level-sum CosFace": "level_sum",
                          "per-level-sum Multi-Similarity": "level_sum:multi_similarity"}  # recipe.with_loss specs
FLOOR = "untrained network"
SEEDS: tuple[int, ...] = (0, 1, 2)
TUNING_SEEDS: tuple[int, ...] = (100, 101)
WORLDS = ("shapes", "digits")
STEPS, QUICK_STEPS = 1600, 150  # 64 epochs of the shapes world (400 steps left every loss near its start)
LR = 0.03  # every model's rate, chosen on the tuning world (Multi-Similarity: results/dyml_tuning_ms.json)
LEVELS = ("fine", "middle", "coarse")
KEYS = ("map", "asi", "r_at_1")


def demo_config(world: str, loss: str, seed: int, quick: bool) -> recipe.Config:
    """The model `loss` (a `recipe.with_loss` spec) on `world`: ConvNet (width 16; 4 blocks on 32-px shapes, 3 on
    16-px digits), 64-d embedding, batches of 16 fine classes x 4, crops of 60-100% area without flips; SGD Nesterov
    at LR, cosine, STEPS steps (quick: QUICK_STEPS). Shapes: about 30 images per fine class, 2 of the 8 colours of
    every shape held out; digits: 2 of the 4 styles of every digit held out. The seed sets the world, the split, the
    network's and the proxies' initialisation and the batches."""
    size = 32 if world == "shapes" else 16
    cfg = recipe.Config(
        model=recipe.ModelConfig(backbone="convnet", width=16, conv_blocks=4 if size == 32 else 3, dim=64),
        loss=recipe.LossConfig(proxy_seed=seed),
        data=recipe.DataConfig(m_per_class=4, classes_per_batch=16, image_size=size, test_resize=size,
                               crop_scale=[0.6, 1.0], flip=False, holdout=0.25 if world == "shapes" else 0.5,
                               split_seed=seed, eval_batch=512),
        world=recipe.WorldConfig(name=world, per_class=30, size=size, seed=seed),
        train=TrainConfig(max_steps=QUICK_STEPS if quick else STEPS, log_every=50, checkpoint_every=10**9, seed=seed),
        optim=OptimConfig(name="sgd", lr=LR, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule="cosine"))
    return recipe.with_loss(cfg, loss)


def _scores(test: dict[str, dict[str, float]]) -> dict[str, float]:
    row = {f"{level}_{k}": test[level][k] for level in LEVELS for k in KEYS}
    row.update({"overall_map": test["overall"]["map"], "overall_asi": test["overall"]["asi"]})
    return row


def asi_png(rows: dict[str, dict[str, float]], out: Path) -> Path:
    """Bars of ASI per level for every model and the floor (mean over seeds, std as error bars), one panel per
    world."""
    from lowlabel.report.figures import figure, save_figure

    worlds = sorted({name.split(": ")[0] for name in rows}, key=lambda w: WORLDS.index(w) if w in WORLDS else 9)
    fig, axes = figure(1, len(worlds), figsize=(5.2 * len(worlds), 3.8), squeeze=False)
    bars = [*MODELS, FLOOR]
    width = 0.8 / len(bars)
    for ax, world in zip(axes[0], worlds, strict=True):
        for j, model in enumerate(bars):
            row = rows.get(f"{world}: {model}")
            if row is None:
                continue
            xs = [i + (j - (len(bars) - 1) / 2) * width for i in range(len(LEVELS))]
            ax.bar(xs, [row[f"{lv}_asi"] for lv in LEVELS], width, yerr=[row.get(f"{lv}_asi_std", 0) for lv in LEVELS],
                   label=model, capsize=3)
        ax.set_xticks(range(len(LEVELS)), LEVELS)
        ax.set_ylim(0, 1)
        ax.set_ylabel("ASI (test, open set)")
        ax.set_title(f"{world} world")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, out)


def figures(run_dir: Path) -> list[Path]:
    """The PNGs of a DyML demo folder (ASI per level), made from its rows.json when missing."""
    import json

    run_dir = Path(run_dir)
    rows_file = run_dir / "rows.json"
    if not any(run_dir.glob("*.png")) and rows_file.is_file():
        asi_png(json.loads(rows_file.read_text())["mean"], run_dir / "asi_per_level.png")
    return sorted(run_dir.glob("*.png"))


def model_scores(world: str, seed: int, loss: str, *, quick: bool, out: Path, runtime: Runtime) -> dict[str, float]:
    """One model (`demo_config`'s `loss` spec) trained and scored on one world and seed (run folder
    out/<world>/<spec, ':' as '_'>/seed<seed>); the result depends only on the arguments, so models may be trained
    in any order or in separate processes."""
    cfg = demo_config(world, loss, seed, quick)
    run_dir = Path(out) / world / loss.replace(":", "_") / f"seed{seed}"
    _, _, summary = recipe.train_model(cfg, data=None, run_dir=run_dir, runtime=runtime, resume=False)
    return _scores(summary["test"])


def floor_scores(world: str, seed: int, *, quick: bool) -> dict[str, float]:
    """The floor every trained model must beat: the demo's network as `seed` initialises it, never trained,
    embedding the same test images and scored the same way."""
    cfg = demo_config(world, "csl", seed, quick)
    images, labels = recipe.load_train(cfg, None)
    model = recipe.build_model(recipe.resolve(cfg, images, labels))
    return _scores(recipe.evaluate_model(model, cfg, recipe.load_test(cfg, None)))


def seed_scores(world: str, seed: int, *, quick: bool, out: Path, runtime: Runtime) -> dict[str, dict[str, float]]:
    """Every model of MODELS trained and scored on one world and seed, and the floor (FLOOR)."""
    scores = {name: model_scores(world, seed, loss, quick=quick, out=out, runtime=runtime)
              for name, loss in MODELS.items()}
    return {**scores, FLOOR: floor_scores(world, seed, quick=quick)}


def summarise(runs: dict[str, list[dict[str, float]]], *, seeds: tuple[int, ...], worlds: tuple[str, ...],
              quick: bool, out: Path, seconds: float) -> DemoResult:
    """The demo's result from `runs` ("<world>: <model>" -> one score dict per seed, in `seeds` order; CSL,
    fine-only CosFace and the floor must be there); writes out/rows.json and the ASI figure. Headline: overall ASI
    (mean over the levels) of CSL vs fine-only CosFace on the first world, floor: the untrained network; rows hold
    means over seeds with `<metric>_std`; notes give every model's per-seed values and CSL's wins."""
    out = Path(out)
    rows = mean_over_seeds(runs)
    write_json(out / "rows.json", {"mean": rows, "per_seed": runs, "seeds": list(seeds)})
    asi_png(rows, out / "asi_per_level.png")
    notes = [f"{len(seeds)} seed(s) {list(seeds)}; {QUICK_STEPS if quick else STEPS} steps of 64 images, ConvNet "
             "width 16, 64-d; test fine classes unseen (open set), leave-one-out per level"]
    for world in worlds:
        csl, fine = runs[f"{world}: CSL"], runs[f"{world}: fine-only CosFace"]
        models = [(name.split(": ", 1)[1], rs) for name, rs in runs.items() if name.startswith(f"{world}: ")]
        for key in ("fine_map", "middle_asi", "coarse_asi", "overall_asi"):
            values = "; ".join(f"{m} " + ", ".join(f"{r[key]:.3f}" for r in rs) for m, rs in models)
            notes.append(f"{world} {key} per seed: {values}")
        wins = {key: sum(a[key] > b[key] for a, b in zip(csl, fine, strict=True))
                for key in ("middle_asi", "coarse_asi")}
        drops = [b["fine_map"] - a["fine_map"] for a, b in zip(csl, fine, strict=True)]
        notes.append(f"{world}: CSL above fine-only in middle ASI {wins['middle_asi']}/{len(seeds)}, coarse ASI "
                     f"{wins['coarse_asi']}/{len(seeds)} seeds; fine mAP drop vs fine-only (points) "
                     + ", ".join(f"{100 * d:+.1f}" for d in drops))
    return DemoResult(slug="dyml", metric="overall_asi", method=f"{worlds[0]}: CSL",
                      baseline=f"{worlds[0]}: fine-only CosFace", floor=f"{worlds[0]}: {FLOOR}", rows=rows,
                      notes=notes, seconds=seconds)


def run(*, quick: bool, out: Path, runtime: Runtime, seeds: tuple[int, ...] | None = None,
        worlds: tuple[str, ...] | None = None) -> DemoResult:
    """Train the models per world and seed and score the floor (quick: seed 0; full: seeds 0, 1, 2; shapes unless
    `worlds` says otherwise; `seeds` override, e.g. TUNING_SEEDS) and summarise them (`summarise`)."""
    t0 = time.perf_counter()
    seeds = tuple(seeds) if seeds is not None else ((SEEDS[0],) if quick else SEEDS)
    worlds = tuple(worlds) if worlds is not None else ("shapes",)
    runs: dict[str, list[dict[str, float]]] = {}
    for world in worlds:
        for seed in seeds:
            for name, scores in seed_scores(world, seed, quick=quick, out=out, runtime=runtime).items():
                runs.setdefault(f"{world}: {name}", []).append(scores)
    return summarise(runs, seeds=seeds, worlds=worlds, quick=quick, out=out, seconds=time.perf_counter() - t0)
