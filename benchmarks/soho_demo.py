"""SOHO demo quality runs (issue #17): the evaluation seeds, one process per seed, then their combination.

    python benchmarks/soho_demo.py --seed S      # one evaluation world -> results/soho_demo_seed{S}.json
    python benchmarks/soho_demo.py --combine     # seeds 0, 1, 2 -> results/soho_demo_full.json
    python benchmarks/soho_demo.py --quick       # `lowlabel demo soho --quick` -> results/soho_demo_quick.json

Per seed: SOHO, no dictionary and no pre-training with the full demo budget (`demo.budget(False)`, chosen on the
tuning world `demo.TUNING_SEED`), retrieval R@1/5 both ways after ITM fine-tuning, zero-shot retrieval of the
pre-trained models, QA accuracy overall and per question kind. The combination gives mean and standard deviation
over the seeds and SOHO's wins against each baseline, per metric.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, demo_rows, write_results
from lowlabel.engine import runtime as rt
from lowlabel.files import read_json
from lowlabel.methods.soho import demo

HEADLINE = ("tr_r1", "ir_r1", "qa_acc")


def one_seed(seed: int) -> None:
    b = demo.budget(False)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        results = demo.run_seed(seed, b, Path(out), rt.init("cpu", seed=0))
    rows = [{"model": name, "seed": seed, **metrics} for name, metrics in results.items()]
    write_results(f"soho_demo_seed{seed}", rows,
                  notes=f"budget {dataclasses.asdict(b)}; {time.perf_counter() - t0:.0f} s on one thread")


def quick() -> None:
    with tempfile.TemporaryDirectory() as out:
        result = demo.run(quick=True, out=Path(out), runtime=rt.init("cpu", seed=0))
        record = read_json(Path(out) / "rows.json")
    rows = demo_rows(result, record["per_seed"], record["seeds"], "model")
    write_results("soho_demo_quick", rows, notes=" | ".join([*result.notes, f"{result.seconds:.0f} s"]))


def combine() -> None:
    per_seed = {s: read_json(RESULTS_DIR / f"soho_demo_seed{s}.json")["rows"] for s in demo.SEEDS}
    by_model = {name: [next(r for r in per_seed[s] if r["model"] == name) for s in demo.SEEDS]
                for name in demo.VARIANTS}
    rows = []
    for name, runs in by_model.items():
        keys = [k for k in runs[0] if k not in ("model", "seed")]
        row = {"model": name, "seed": "mean"}
        for k in keys:
            values = [r[k] for r in runs]
            row[k] = statistics.fmean(values)
            row[f"{k}_std"] = statistics.stdev(values)
        rows.append(row)
    notes = []
    for metric in HEADLINE:
        soho = [r[metric] for r in by_model["SOHO"]]
        for base in demo.VARIANTS[1:]:
            other = [r[metric] for r in by_model[base]]
            wins = sum(a > o for a, o in zip(soho, other, strict=True))
            ties = sum(a == o for a, o in zip(soho, other, strict=True))
            notes.append(f"{metric}: SOHO ahead of {base} in {wins}/{len(soho)} seeds ({ties} tied)")
    rows += [r for s in demo.SEEDS for r in per_seed[s]]
    write_results("soho_demo_full", rows, notes=f"seeds {list(demo.SEEDS)}; " + "; ".join(notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, help="one evaluation seed (0, 1 or 2)")
    parser.add_argument("--combine", action="store_true", help="combine the per-seed files")
    parser.add_argument("--quick", action="store_true", help="the quick demo (one seed, smoke-sized)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.combine:
        combine()
    elif args.quick:
        quick()
    elif args.seed in demo.SEEDS:
        one_seed(args.seed)
    else:
        parser.error(f"give --seed in {demo.SEEDS}, --combine or --quick")


if __name__ == "__main__":
    main()
