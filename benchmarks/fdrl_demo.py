"""FDRL's demo in the paper's setting (identity-pretrained backbone, every head fine-tuned from it), paired seeds:
the numbers behind the README row.

    python benchmarks/fdrl_demo.py --world tuning [--seeds 100 101] [--threads 1]   -> fdrl_demo_tuning.json
    python benchmarks/fdrl_demo.py --world evaluation [--seeds 0 1 2] [--threads 1] -> fdrl_demo.json
    python benchmarks/fdrl_demo.py --world evaluation --quick                        -> fdrl_demo_quick.json
    python benchmarks/fdrl_demo.py --world tuning|evaluation --merge                 (joins the per-seed files)
    python benchmarks/fdrl_demo.py --world tuning --seeds 100 --rates 0.003          (a part of the grid)
    python benchmarks/fdrl_demo.py ... --expressions action_units   -> fdrl_demo_finegrained[_tuning|_quick].json
    python benchmarks/fdrl_demo.py --world tuning --epochs 16 ...    -> <stem>_tuning_ep16.json (another budget)

Tuning worlds (`demo.TUNING_SEEDS`): every head at every rate of `demo.LR_GRID`, fine-tuned from the same pretrained
backbone; each head's choice is the rate with the best mean test accuracy over the tuning worlds (`chosen_lr`), which
`demo.TUNED_LR` of the expression table (`--expressions`, the faces world's `classic` or the fine-grained
`action_units`), at its budget `demo.TUNED_EPOCHS`, must equal before the evaluation worlds run. Evaluation worlds
(`demo.SEEDS`): `demo.run`, run once.
A subset of the seeds writes `<name>_seeds<...>.json` (one process per seed); `--merge` joins them. Run folders and
figures under runs/bench/<result-file stem>/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine
from lowlabel.engine import runtime as rt
from lowlabel.files import read_json, write_json
from lowlabel.methods.fdrl import demo

NAMES = {"classic": "fdrl_demo", "action_units": "fdrl_demo_finegrained"}  # result-file stem per expression table


def tuning_rows(seeds: tuple[int, ...], rates: tuple[float, ...], runtime: rt.Runtime, expressions: str,
                epochs: int) -> list[dict]:
    """Accuracy of every head at every rate of `rates` after `epochs` on the tuning worlds `seeds` (one pretrained
    backbone per world, shared by all)."""
    rows, runs = [], Path("runs/bench") / NAMES[expressions]
    budget = "" if epochs == demo.EPOCHS else f"ep{epochs}_"
    for seed in seeds:
        for lr in rates:
            results, record = demo.train_heads(False, seed, lrs=dict.fromkeys(demo.MODELS, lr),
                                               out=runs / "tuning" / f"{budget}lr{lr:g}", runtime=runtime,
                                               pretrain_dir=runs / "tuning" / "pretrain" / f"seed{seed}",
                                               models=tuple(demo.MODELS), expressions=expressions, epochs=epochs)
            for name, test in results.items():
                rows.append({"model": name, "lr": lr, "seed": seed, "epochs": epochs, "accuracy": test["accuracy"],
                             "balanced_accuracy": test["balanced_accuracy"], "seconds": test["seconds"],
                             "pretrain_identity_accuracy": record["identity_accuracy"]})
                print(rows[-1], flush=True)
    return rows


def evaluation_rows(seeds: tuple[int, ...], quick: bool, runtime: rt.Runtime, expressions: str) -> list[dict]:
    """`demo.run` on each world of `seeds`: per-seed accuracy of every head."""
    rows = []
    for seed in seeds:
        out = Path("runs/bench") / NAMES[expressions] / ("quick" if quick else "evaluation") / f"seed{seed}"
        result = demo.run(quick=quick, out=out, runtime=runtime, seeds=(seed,), expressions=expressions)
        saved = read_json(out / "rows.json", "demo rows")
        for name, (test,) in saved["per_seed"].items():
            rows.append({"model": name, "lr": demo.TUNED_LR[expressions].get(name, 0.0), "seed": seed, **test,
                         "pretrain_identity_accuracy": saved["pretrain_identity_accuracy"][0]})
            print(rows[-1], flush=True)
        print(result.verdict, f"{result.seconds:.0f} s", flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    """Per (rate, model): mean and population std of accuracy over seeds, and FDRL's paired wins against the model
    (FDRL at the same rate on the tuning worlds; at its own, chosen rate on the evaluation worlds, where each model
    has one); per model, the rate with the best mean accuracy."""
    groups: dict[tuple[float, str], dict[int, float]] = {}
    for r in rows:
        groups.setdefault((r["lr"], r["model"]), {})[r["seed"]] = r["accuracy"]
    fdrl_rates = {lr for lr, name in groups if name == "FDRL"}
    means = {}
    for (lr, name), acc in sorted(groups.items()):
        fdrl = groups.get((lr if lr in fdrl_rates else min(fdrl_rates), "FDRL"), {})
        means[f"{name} @ lr {lr:g}"] = {
            "model": name, "lr": lr, "accuracy": statistics.fmean(acc.values()),
            "accuracy_std": statistics.pstdev(acc.values()), "seeds": sorted(acc),
            "fdrl_wins": None if name == "FDRL" else sum(fdrl[s] > a for s, a in acc.items() if s in fdrl)}
    chosen = {}
    for m in means.values():
        if m["model"] not in demo.MODELS:
            continue
        if m["model"] not in chosen or m["accuracy"] > means[f"{m['model']} @ lr {chosen[m['model']]:g}"]["accuracy"]:
            chosen[m["model"]] = m["lr"]
    return {"mean": means, "chosen_lr": chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=("tuning", "evaluation"), default="evaluation")
    parser.add_argument("--quick", action="store_true", help="the quick demo (evaluation world only)")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--rates", type=float, nargs="+", help="tuning: a part of demo.LR_GRID (one process each)")
    parser.add_argument("--merge", action="store_true", help="join the per-seed files of --world into one")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--expressions", choices=tuple(NAMES), default=demo.WORLD, help="the faces world's table")
    parser.add_argument("--epochs", type=int, default=demo.EPOCHS, help="tuning: the fine-tuning budget")
    args = parser.parse_args()
    rt.set_threads(args.threads)
    stem, epochs = NAMES[args.expressions], args.epochs
    budget = "" if epochs == demo.EPOCHS else f"_ep{epochs}"
    if budget and args.world != "tuning":
        raise SystemExit("--epochs is a tuning question: the evaluation worlds run the demo's own budget")
    name = f"{stem}_tuning{budget}" if args.world == "tuning" else f"{stem}_quick" if args.quick else stem
    all_seeds = demo.TUNING_SEEDS if args.world == "tuning" else (demo.QUICK_SEED,) if args.quick else demo.SEEDS
    if args.merge:
        parts = sorted(RESULTS_DIR.glob(f"{name}_seeds*.json"))
        rows = [r for p in parts for r in read_json(p, "per-seed result")["rows"]]
        loaded = [read_json(p, "per-seed result") for p in parts]
        write_json(RESULTS_DIR / f"{name}.json", {
            **loaded[0], "name": name, "rows": rows, **summary(rows), "seconds": sum(d["seconds"] for d in loaded),
            "notes": "; ".join(d["notes"] for d in loaded), "merged_from": [p.name for p in parts],
            "command": "; ".join(d["command"] for d in loaded) + f"; then python {' '.join(sys.argv)}"})
        print(summary(rows))
        return
    seeds = tuple(args.seeds or all_seeds)
    runtime = rt.init("cpu", seed=0)
    t0 = time.perf_counter()
    if args.world == "tuning":
        rows = tuning_rows(seeds, tuple(args.rates or demo.LR_GRID), runtime, args.expressions, epochs)
    else:
        epochs = demo.TUNED_EPOCHS[args.expressions]
        tuning = f"{stem}_tuning{'' if epochs == demo.EPOCHS else f'_ep{epochs}'}.json"
        tuned = summary(read_json(RESULTS_DIR / tuning, "tuning result")["rows"])["chosen_lr"]
        if tuned != demo.TUNED_LR[args.expressions]:
            raise SystemExit(f"demo.TUNED_LR[{args.expressions!r}] {demo.TUNED_LR[args.expressions]} is not the choice "
                             f"of {tuning}: {tuned}")
        rows = evaluation_rows(seeds, args.quick, runtime, args.expressions)
    suffix = "" if seeds == tuple(all_seeds) and not args.rates else "_seeds" + "_".join(map(str, seeds))
    suffix += "_lr" + "_".join(f"{lr:g}" for lr in args.rates) if args.rates else ""
    result = {"name": name + suffix, "rows": rows, **summary(rows), "seconds": time.perf_counter() - t0,
              "date": time.strftime("%Y-%m-%d"), "machine": machine(), "command": " ".join(["python", *sys.argv]),
              "notes": f"{args.world} worlds {list(seeds)} ({args.expressions} expressions), "
                       f"{'quick' if args.quick else 'full'} mode, "
                       f"{args.threads} thread(s); pretraining {demo.QUICK_PRETRAIN if args.quick else demo.PRETRAIN}; "
                       f"fine-tuning {demo.QUICK_EPOCHS if args.quick else epochs} epochs"}
    write_json(RESULTS_DIR / f"{name}{suffix}.json", result)
    for key, m in result["mean"].items():
        print(f"{key:32s} {m['accuracy']:.4f} ± {m['accuracy_std']:.4f}  FDRL wins {m['fdrl_wins']}")
    print(f"{RESULTS_DIR / name}{suffix}.json in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
