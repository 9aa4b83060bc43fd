"""DyML on Omniglot (../shared/data/omniglot_small): budget chosen on a tuning split, then the evaluation split once.

--split tuning: training characters only. `data.tuning=true` takes the training side of the evaluation split
(data.split_seed=0 holds out 60 characters) and holds out a quarter of its characters of every alphabet again
(data.tuning_seed=1) as the tuning query/gallery; the evaluation's 60 characters are in neither part. Seed 100 (never
an evaluation seed). Stage 1: every model at STEPS[0] for every rate of LRS; stage 2: every model at STEPS[1] with
its best stage-1 rate. Rules fixed before the runs: a model's rate is the one with the best tuning overall ASI at
STEPS[0]; the budget is STEPS[1] when the models' mean tuning overall ASI there is above their mean at STEPS[0], else
STEPS[0]; the chosen rows carry "chosen": true. Writes benchmarks/results/dyml_omniglot_tuning.json.

--split evaluation: the evaluation split, seeds 0, 1, 2, every model at the chosen budget and its chosen rate (read
from dyml_omniglot_tuning.json); writes benchmarks/results/dyml_omniglot_tuned.json (mean ± population std and every
seed's values; notes: CSL's wins per level against every other model).

One process, models one after another (`--threads` torch threads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, write_results
from lowlabel.engine.config import load_config
from lowlabel.files import read_json
from lowlabel.methods.dyml import recipe
from lowlabel.methods.dyml.compare import compare_losses, scores

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot_small"
MODELS = ("csl", "fine_only", "level_sum", "level_sum:multi_similarity")  # recipe.with_loss specs
LRS = (0.03, 0.1)
STEPS = (800, 1600)  # what a shared 2-core machine afforded for 4 models x 3 seeds (400 left every loss untrained)
TUNING_SEED, EVAL_SEEDS = 100, (0, 1, 2)
# the documented Omniglot CPU setting (docs/methods/dyml.md), everything but the steps and the rate
OMNIGLOT = ["model.backbone=convnet", "model.width=16", "model.conv_blocks=3", "model.dim=64", "data.image_size=28",
            "data.test_resize=28", "data.m_per_class=4", "data.classes_per_batch=16", "data.crop_scale=[0.7,1.0]",
            "data.flip=false", "data.holdout=0.25", "data.split_seed=0", "data.eval_batch=512",
            "train.checkpoint_every=1000000000"]
LEVELS = ("fine", "middle", "coarse", "overall")


def train_seeds(model: str, *, steps: int, lr: float, seeds: tuple[int, ...], tuning: bool) -> list[dict]:
    """`model` trained at `steps` and `lr` for every seed: per seed its test scores (per level and overall), the
    training seconds and the logged training-loss curve."""
    overrides = [*OMNIGLOT, f"train.max_steps={steps}", f"train.log_every={steps // 8}", f"optim.lr={lr}",
                 f"data.tuning={str(tuning).lower()}"]
    with tempfile.TemporaryDirectory() as out:
        result = compare_losses(data=DATA, seeds=seeds, losses=[model], out=Path(out), overrides=overrides,
                                device="cpu")
        curves = [[round(json.loads(line)["loss"], 3) for line in
                   (Path(out) / model.replace(":", "_") / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()]
                  for seed in seeds]
    return [{"model": model, "steps": steps, "lr": lr, "seed": seed, "seconds": round(sec, 1), "loss_curve": curve,
             **scores}
            for seed, sec, curve, scores in zip(seeds, result["seconds"][model], curves, result["per_seed"][model],
                                                strict=True)]


def untrained(seed: int, *, tuning: bool) -> dict:
    """The floor: the network as `seed` initialises it, never trained, scored on the same test side."""
    cfg = load_config(recipe.Config, None, [*OMNIGLOT, f"train.seed={seed}", f"data.tuning={str(tuning).lower()}"])
    images, labels = recipe.load_train(cfg, DATA)
    model = recipe.build_model(recipe.resolve(cfg, images, labels))
    return {"model": "untrained", "steps": 0, "seed": seed,
            **scores(recipe.evaluate_model(model, cfg, recipe.load_test(cfg, DATA)))}


def tuning() -> None:
    rows = [row for model in MODELS for lr in LRS
            for row in train_seeds(model, steps=STEPS[0], lr=lr, seeds=(TUNING_SEED,), tuning=True)]
    best = {m: max((r for r in rows if r["model"] == m), key=lambda r: r["overall_asi"]) for m in MODELS}
    longer = {m: train_seeds(m, steps=STEPS[1], lr=best[m]["lr"], seeds=(TUNING_SEED,), tuning=True)[0]
              for m in MODELS}
    rows += [*longer.values(), untrained(TUNING_SEED, tuning=True)]
    short_mean = statistics.fmean(best[m]["overall_asi"] for m in MODELS)
    long_mean = statistics.fmean(longer[m]["overall_asi"] for m in MODELS)
    chosen = longer if long_mean > short_mean else best
    for row in chosen.values():
        row["chosen"] = True
    write_results("dyml_omniglot_tuning", rows, notes=(
        f"tuning split (training characters only, data.tuning_seed=1), seed {TUNING_SEED}; mean tuning overall ASI "
        f"at the best rate: {STEPS[0]} steps {short_mean:.3f}, {STEPS[1]} steps {long_mean:.3f} -> "
        f"{next(iter(chosen.values()))['steps']} steps; rates "
        + ", ".join(f"{m} {chosen[m]['lr']}" for m in MODELS)))


def evaluation() -> None:
    chosen = {r["model"]: r for r in read_json(RESULTS_DIR / "dyml_omniglot_tuning.json")["rows"] if r.get("chosen")}
    t0 = time.perf_counter()
    per_seed = {m: train_seeds(m, steps=chosen[m]["steps"], lr=chosen[m]["lr"], seeds=EVAL_SEEDS, tuning=False)
                for m in MODELS}
    per_seed["untrained"] = [untrained(seed, tuning=False) for seed in EVAL_SEEDS]
    metrics = [k for k in per_seed["csl"][0] if any(k.startswith(f"{lv}_") for lv in LEVELS)]
    rows = []
    for m, runs in per_seed.items():
        mean = {"model": m, "seed": "mean", "steps": runs[0]["steps"], "lr": runs[0].get("lr")}
        for k in metrics:
            values = [r[k] for r in runs]
            mean.update({k: statistics.fmean(values), f"{k}_std": statistics.pstdev(values)})
        rows.append(mean)
    rows += [r for runs in per_seed.values() for r in runs]
    wins = [f"CSL above {m} in {k}: {sum(a[k] > b[k] for a, b in zip(per_seed['csl'], runs, strict=True))}/"
            f"{len(EVAL_SEEDS)}" for m, runs in per_seed.items() if m != "csl"
            for k in ("fine_map", "middle_asi", "coarse_asi", "overall_asi")]
    write_results("dyml_omniglot_tuned", rows, notes=(
        f"evaluation split (60 held-out characters), seeds {list(EVAL_SEEDS)}, budget and rates from "
        f"dyml_omniglot_tuning.json; {time.perf_counter() - t0:.0f} s; " + "; ".join(wins)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("tuning", "evaluation"), required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.split == "tuning":
        tuning()
    else:
        evaluation()


if __name__ == "__main__":
    main()
