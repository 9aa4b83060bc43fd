"""DTC demo on the volumes world: DTC against the same V-Net trained with DTC's own supervised loss on the labelled
volumes only (spec "Small-scale CPU demo"), both with the same steps, optimiser, seed and test set; also the head
disagreement on unlabelled data. The budget is chosen on a separate tuning world (`tune`, `choose_budget`)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from lowlabel.engine.checkpoint import newest_checkpoint
from lowlabel.engine.config import load_config
from lowlabel.engine.demo import DemoResult, mean_over_seeds
from lowlabel.engine.recipe import load_model
from lowlabel.engine.rundir import recorded_data
from lowlabel.engine.runtime import Runtime, cpu_threads
from lowlabel.files import write_json
from lowlabel.methods.dtc import recipe
from lowlabel.methods.dtc.losses import level_set_to_mask
from lowlabel.methods.dtc.plots import overlay_png
from lowlabel.metrics.segmentation import case_metrics, dice

METHOD = "DTC"
BASELINE = "V-Net, labelled only (DTC's supervised loss)"
RUN_NAMES = {METHOD: "DTC", BASELINE: "V-Net_supervised"}
FLOOR = "intensity threshold (fit on the labelled volumes)"
EVAL_SEEDS = (0, 1, 2)  # the evaluation world: run once, after the budget was fixed
QUICK_SEEDS = (3,)  # fixed before any run with it
TUNING_SEEDS = (100, 101)  # the tuning world: choices are made here only
BUDGETS = (150, 300, 600)
BUDGET_TOLERANCE = 0.01
STEPS = 600  # chosen on the tuning world by choose_budget (benchmarks/results/dtc_tuning.json)


def demo_config(quick: bool, seed: int = 0, steps: int | None = None) -> recipe.Config:
    """Narrow V-Net, 32^3 patches of 48x48x32 volumes, 4 labelled + 12 unlabelled training volumes, `steps` steps
    (default STEPS, chosen on the tuning world); 4 test volumes (quick) or 10. The seed sets the world, the
    initialisation and the batches."""
    synthetic = recipe.SyntheticConfig(n_train=16, n_test=4 if quick else 10, shape=[48, 48, 32], seed=seed)
    cfg = recipe.Config(labelled=4, n_filters=4, patch=[32, 32, 32], stride=[16, 16, 16], synthetic=synthetic,
                        infer_batch=8)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, checkpoint_every=10**9))
    return recipe.with_steps(cfg, STEPS if steps is None else steps)


def variants(cfg: recipe.Config) -> dict[str, recipe.Config]:
    """The models of one seed, identical but for the loss and the unlabelled half of the batch: DTC, and the named
    baseline, DTC's own supervised loss (Dice + beta L_LSF, i.e. the level-set ablation) on the labelled volumes
    only. (The paper's Dice-only V-Net is `--supervised --set beta=0`; it is not run here, for time.)"""
    return {METHOD: cfg, BASELINE: dataclasses.replace(cfg, unlabelled_bs=0, consistency=0.0)}


def choose_budget(dice: dict[int, dict[str, float]]) -> int:
    """The budget rule, fixed before the tuning runs: the smallest budget at which every model's mean tuning Dice is
    within BUDGET_TOLERANCE of its best over the budgets (so no model is stopped before it has caught up).
    `dice` maps budget -> model -> mean Dice."""
    best = {name: max(row[name] for row in dice.values()) for name in next(iter(dice.values()))}
    return min(b for b, row in dice.items() if all(row[n] >= best[n] - BUDGET_TOLERANCE for n in best))


def train_seed(cfg: recipe.Config, models: dict[str, recipe.Config], out: Path,
               runtime: Runtime) -> dict[str, tuple[torch.nn.Module, dict[str, float]]]:
    """Train every model of one seed; per model, the trained network and its test metrics with the head
    disagreement on the unlabelled training volumes."""
    unlabelled = recipe.synthetic_cases(cfg, "train")[cfg.labelled :]
    trained = {}
    for name, variant in models.items():
        run_dir = out / RUN_NAMES[name] / f"seed{cfg.synthetic.seed}_steps{cfg.train.max_steps}"
        model, summary = recipe.train_model(variant, data=None, run_dir=run_dir, runtime=runtime, resume=False)
        trained[name] = (model, {**summary["test"], "head_disagreement": head_disagreement(model, unlabelled,
                                                                                            variant)})
    return trained


def tune(out: Path, runtime: Runtime, seeds: tuple[int, ...] = TUNING_SEEDS) -> dict[int, dict[str, list[dict]]]:
    """The tuning runs (TUNING_SEEDS, never used for the reported numbers): DTC and the named baseline at every
    budget of BUDGETS; returns budget -> model -> per-seed scores (seeds may run in separate processes and be
    joined before `tuning_summary`)."""
    runs: dict[int, dict[str, list[dict[str, float]]]] = {}
    for steps in BUDGETS:
        for seed in seeds:
            cfg = demo_config(False, seed, steps)
            for name, (_, scores) in train_seed(cfg, variants(cfg), Path(out), runtime).items():
                runs.setdefault(steps, {}).setdefault(name, []).append(scores)
    return runs


def tuning_summary(runs: dict[int, dict[str, list[dict]]]) -> dict:
    """Per budget the mean tuning Dice of each model, and the budget `choose_budget` picks."""
    means = {steps: {name: float(np.mean([r["dice"] for r in rs])) for name, rs in by_model.items()}
             for steps, by_model in runs.items()}
    return {"budgets": list(BUDGETS), "tolerance": BUDGET_TOLERANCE, "mean_dice": means,
            "chosen": choose_budget(means)}


def head_disagreement(model: torch.nn.Module, cases: list, cfg: recipe.Config) -> float:
    """Mean |sigmoid(-k z) - sigmoid(logits)| of the two heads on the central patch of each volume (eval mode)."""
    patch = recipe.effective_patch(cfg)
    crops = []
    for case in cases:
        start = [max(0, (s - p) // 2) for s, p in zip(case.image.shape, patch, strict=True)]
        window = tuple(slice(a, a + p) for a, p in zip(start, patch, strict=True))
        crops.append(torch.from_numpy(case.image[window].copy()))
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        level_set, logits = model(torch.stack(crops)[:, None].to(device))
        return float((level_set_to_mask(level_set, cfg.k) - torch.sigmoid(logits)).abs().mean())


def threshold_scores(labelled: list, test: list) -> dict[str, float]:
    """The floor any trained network must beat: one intensity threshold (either polarity), the one with the best
    mean Dice on the labelled training volumes among their 1st..99th intensity percentiles, applied to every test
    volume. No network, no unlabelled volume."""
    levels = np.percentile(np.concatenate([c.image.ravel() for c in labelled]), np.arange(1, 100))
    rules = [(t, above) for t in levels for above in (True, False)]

    def mask(image: np.ndarray, rule: tuple[float, bool]) -> np.ndarray:
        return image > rule[0] if rule[1] else image < rule[0]

    best = max(rules, key=lambda r: np.mean([dice(mask(c.image, r), c.label) for c in labelled]))
    return recipe.mean_metrics([case_metrics(mask(c.image, best), c.label) for c in test])


def figures(run_dir: Path) -> list[Path]:
    """The PNGs of a DTC run or demo folder (slice overlays written by the demo and `lowlabel dtc eval --overlay`).
    A training run folder without one gets `overlay.png` of its first test case, drawn from its newest checkpoint
    on the data its run.json records (so the report shows the method's own figure; training pays nothing for it)."""
    run_dir = Path(run_dir)
    found = sorted(run_dir.glob("*.png"))
    newest = newest_checkpoint(run_dir)
    if found or newest is None or not (run_dir / "config.yaml").is_file():
        return found
    cfg = load_config(recipe.Config, run_dir / "config.yaml")
    model = load_model(recipe.build_model, cfg, newest, "cpu")
    first = recipe.load_split(cfg, recorded_data(run_dir, "dtc")[1], "test", 1.0)[0]
    return [overlay_png(model, cfg, first, run_dir / "overlay.png")]


def run_seed(seed: int, *, quick: bool, out: Path, runtime: Runtime) -> dict[str, dict[str, float]]:
    """One seed of the demo: every model's test metrics and head disagreement (the first seed also writes the
    overlay PNG of DTC's first test volume)."""
    cfg = demo_config(quick, seed)
    trained = train_seed(cfg, variants(cfg), Path(out), runtime)
    test = recipe.synthetic_cases(cfg, "test")
    if seed == (QUICK_SEEDS if quick else EVAL_SEEDS)[0]:
        overlay_png(trained[METHOD][0], cfg, test[0], Path(out) / "dtc_overlay.png")
    floor = threshold_scores(recipe.synthetic_cases(cfg, "train")[: cfg.labelled], test)
    return {**{name: scores for name, (_, scores) in trained.items()}, FLOOR: floor}


def demo_result(per_seed: list[dict[str, dict[str, float]]], *, quick: bool, out: Path, seconds: float) -> DemoResult:
    """The DemoResult of the seeds' `run_seed` outputs (in seed order; rows.json in `out` gets every number)."""
    seeds = QUICK_SEEDS if quick else EVAL_SEEDS
    runs = {name: [scores[name] for scores in per_seed] for name in per_seed[0]}
    rows = mean_over_seeds(runs)
    wins = sum(a["dice"] > b["dice"] for a, b in zip(runs[METHOD], runs[BASELINE], strict=True))
    write_json(Path(out) / "rows.json", {"mean": rows, "per_seed": runs, "seeds": list(seeds), "dice_wins": wins})
    cfg = demo_config(quick, seeds[0])
    listed = "; ".join(f"{name} " + ", ".join(f"{r['dice']:.3f}" for r in rs) for name, rs in runs.items())
    return DemoResult(slug="dtc", metric="dice", method=METHOD, baseline=BASELINE, floor=FLOOR, rows=rows,
                      notes=[f"seeds {list(seeds)}; {cfg.labelled} labelled + {cfg.synthetic.n_train - cfg.labelled} "
                             f"unlabelled volumes of {cfg.synthetic.shape}, {cfg.synthetic.n_test} test volumes, "
                             f"{cfg.train.max_steps} steps (chosen on the tuning world), "
                             f"V-Net n_filters={cfg.n_filters}",
                             f"per-seed Dice: {listed}; DTC ahead of {BASELINE} in {wins}/{len(seeds)} seeds"],
                      seconds=seconds)


def run(*, quick: bool, out: Path, runtime: Runtime) -> DemoResult:
    """Train DTC and the labelled-only V-Net with DTC's supervised loss on the evaluation world, QUICK_SEEDS or
    EVAL_SEEDS, one seed after the other; compare test Dice (higher wins). Rows are means over the seeds, with
    `<metric>_std`; the notes give the per-seed Dice and DTC's wins over seeds."""
    t0 = time.perf_counter()
    seeds = QUICK_SEEDS if quick else EVAL_SEEDS
    with cpu_threads(1):  # the recorded runs used one thread; the quick demo's two rows differ in the 4th digit
        per_seed = [run_seed(seed, quick=quick, out=out, runtime=runtime) for seed in seeds]
    return demo_result(per_seed, quick=quick, out=out, seconds=time.perf_counter() - t0)
