"""DyML demo numbers: CSL vs fine-only CosFace, the per-level sums of CosFace and of Multi-Similarity losses and the
untrained network (the floor) on the shapes world, open set, per level (mAP, ASI, R@1) and overall, mean and
standard deviation over the seeds plus every seed's values (quick: seed 0 at the quick budget, as `lowlabel demo
dyml --quick`; full: seeds 0, 1, 2, run once after the budget was chosen on the tuning world,
benchmarks/dyml_tuning.py). `--jobs N` trains N models at once in separate processes (each with --threads torch
threads; every model's result depends only on its seed and loss, so the numbers are those of `lowlabel demo dyml`).
`--models` trains only the named models and reads the others' per-seed scores from the result file already there
(a model added later joins the earlier runs without rerunning them). Writes benchmarks/results/dyml_demo[_quick].json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, demo_rows, write_results
from lowlabel.engine import runtime as rt
from lowlabel.files import read_json
from lowlabel.methods.dyml import demo

WORLD = "shapes"


def _model_scores(seed: int, loss: str, quick: bool, out: str, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    return demo.model_scores(WORLD, seed, loss, quick=quick, out=Path(out), runtime=rt.init("cpu", seed=0))


def _floor_scores(seed: int, quick: bool, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    return demo.floor_scores(WORLD, seed, quick=quick)


def earlier_runs(name: str, models: list[str], seeds: tuple[int, ...]) -> dict[str, list[dict[str, float]]]:
    """Per-seed scores of `models` from benchmarks/results/<name>.json (its rows of seeds `seeds`, in that order)."""
    rows = read_json(RESULTS_DIR / f"{name}.json")["rows"]
    keys = [k for k in rows[0] if k not in ("model", "seed") and not k.endswith("_std")]
    return {f"{WORLD}: {m}": [next({k: r[k] for k in keys} for r in rows if r["model"] == f"{WORLD}: {m}"
                                   and r["seed"] == seed) for seed in seeds] for m in models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick demo (seed 0, quick budget)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once, one process each")
    parser.add_argument("--models", nargs="+", choices=list(demo.MODELS), default=list(demo.MODELS),
                        help="models to train now (the others are read from the result file)")
    args = parser.parse_args()
    name = "dyml_demo_quick" if args.quick else "dyml_demo"
    seeds = (demo.SEEDS[0],) if args.quick else demo.SEEDS
    kept = [m for m in demo.MODELS if m not in args.models]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out, ProcessPoolExecutor(
            max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        grid = [(seed, demo.MODELS[m], args.quick, out, args.threads) for seed in seeds for m in args.models]
        scores = dict(zip([g[:2] for g in grid], pool.map(_model_scores, *zip(*grid, strict=True)), strict=True))
        floors = list(pool.map(_floor_scores, seeds, [args.quick] * len(seeds), [args.threads] * len(seeds)))
        runs = {**earlier_runs(name, kept, seeds),
                **{f"{WORLD}: {m}": [scores[seed, demo.MODELS[m]] for seed in seeds] for m in args.models}}
        runs = {f"{WORLD}: {m}": runs[f"{WORLD}: {m}"] for m in demo.MODELS} | {f"{WORLD}: {demo.FLOOR}": floors}
        result = demo.summarise(runs, seeds=seeds, worlds=(WORLD,), quick=args.quick, out=Path(out),
                                seconds=time.perf_counter() - t0)
    rows = demo_rows(result, runs, list(seeds), "model")
    ran = f"{result.seconds:.0f} s with {args.jobs} process(es) for {', '.join(args.models)} and the floor"
    earlier = [f"{', '.join(kept)}: per-seed scores read from the earlier {name}.json, not rerun"] if kept else []
    write_results(name, rows, notes=" | ".join([*result.notes, ran, *earlier]))


if __name__ == "__main__":
    main()
