"""DyML demo numbers: CSL vs fine-only CosFace vs the per-level sum of CosFace losses on the shapes world, open set,
per level (mAP, ASI, R@1) and overall, mean and standard deviation over the seeds plus every seed's values
(quick: seed 0 at the quick budget, as `lowlabel demo dyml --quick`; full: seeds 0, 1, 2, run once after the
budget was chosen on the tuning world, benchmarks/dyml_tuning.py). `--jobs N` trains N models at once in separate
processes (each with --threads torch threads; every model's result depends only on its seed and loss, so the numbers
are those of `lowlabel demo dyml`). Writes
benchmarks/results/dyml_demo[_quick].json.
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
from _common import demo_rows, write_results
from lowlabel.engine import runtime as rt
from lowlabel.methods.dyml import demo

WORLD = "shapes"


def _model_scores(seed: int, loss: str, quick: bool, out: str, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    return demo.model_scores(WORLD, seed, loss, quick=quick, out=Path(out), runtime=rt.init("cpu", seed=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick demo (seed 0, quick budget)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once, one process each")
    args = parser.parse_args()
    seeds = (demo.SEEDS[0],) if args.quick else demo.SEEDS
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out, ProcessPoolExecutor(
            max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        grid = [(seed, loss, args.quick, out, args.threads) for seed in seeds for loss in demo.MODELS.values()]
        scores = dict(zip([g[:2] for g in grid], pool.map(_model_scores, *zip(*grid, strict=True)), strict=True))
        runs = {f"{WORLD}: {name}": [scores[seed, loss] for seed in seeds] for name, loss in demo.MODELS.items()}
        result = demo.summarise(runs, seeds=seeds, worlds=(WORLD,), quick=args.quick, out=Path(out),
                                seconds=time.perf_counter() - t0)
    rows = demo_rows(result, runs, list(seeds), "model")
    write_results("dyml_demo_quick" if args.quick else "dyml_demo", rows,
                  notes=" | ".join([*result.notes, f"{result.seconds:.0f} s with {args.jobs} process(es)"]))


if __name__ == "__main__":
    main()
