"""SDD-FIQA against its baselines on the faces world, paired seeds: the numbers behind the README row.

    python benchmarks/sdd_fiqa_demo.py --world tuning [--quick] [--seeds 0 1 2] [--threads 1]
    python benchmarks/sdd_fiqa_demo.py --world evaluation [--quick] [--seeds 0 1 2] [--threads 1]   (the default)

Tuning world: every score, with the noise-robust sharpness at each scale of `demo.SHARPNESS_SIGMAS`; the scale with
the best mean AOC at FMR 1e-2 over the seeds is the choice (`chosen_sigma`), which `demo.SHARPNESS_SIGMA` must equal.
Evaluation world: run once with that scale. Writes benchmarks/results/sdd_fiqa_demo_<world>_<quick|full>.json
(per-seed AOCs, means with spreads, SDD-FIQA's wins against each score, Spearman diagnostics) and EVRC plots of the
first seed under runs/bench/sdd_fiqa_demo/<world>_<mode>/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine
from lowlabel.engine import runtime as rt
from lowlabel.files import read_json, write_json
from lowlabel.methods.sdd_fiqa import demo


def chosen_sigma(result: dict) -> float:
    """The sharpness scale with the best mean AOC at FMR 1e-2 on the tuning world."""
    return max(demo.SHARPNESS_SIGMAS, key=lambda s: result["mean"][demo.sharpness_name(s)][demo.METRIC])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=sorted(demo.WORLDS), default="evaluation")
    parser.add_argument("--quick", action="store_true", help="the quick demo's world size and steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(demo.SEEDS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rt.set_threads(args.threads)
    mode = "quick" if args.quick else "full"
    name = f"sdd_fiqa_demo_{args.world}_{mode}"
    if args.world == "tuning":
        sigmas = demo.SHARPNESS_SIGMAS
    else:
        tuned = RESULTS_DIR / "sdd_fiqa_demo_tuning_quick.json"
        if chosen_sigma(read_json(tuned, "tuning result")) != demo.SHARPNESS_SIGMA:
            raise SystemExit(f"demo.SHARPNESS_SIGMA {demo.SHARPNESS_SIGMA} is not the scale chosen in {tuned}")
        sigmas = (demo.SHARPNESS_SIGMA,)
    t0 = time.perf_counter()
    out = Path("runs/bench/sdd_fiqa_demo") / f"{args.world}_{mode}"
    result = demo.run_world(quick=args.quick, world=args.world, seeds=tuple(args.seeds),
                            runtime=rt.init("cpu", seed=0), out=out, sigmas=sigmas)
    if args.world == "tuning":
        result["chosen_sigma"] = chosen_sigma(result)
    rows = [{"score": k, "aoc_fmr1e-2": v[demo.METRIC], "std": v.get(f"{demo.METRIC}_std", 0.0),
             "aoc_fmr1e-3": v["aoc_fmr1e-3"], "sdd_wins": result["sdd_wins"].get(k, {}).get(demo.METRIC, "-")}
            for k, v in result["mean"].items()]
    result.update({"name": name, "rows": rows, "notes": f"{args.world} world, seeds {args.seeds}, {mode} mode",
                   "seconds": time.perf_counter() - t0, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
                   "command": " ".join(["python", *sys.argv])})
    write_json(RESULTS_DIR / f"{name}.json", result)
    for row in rows:
        print(f"{row['score']:42s} {row['aoc_fmr1e-2']:.4f} ± {row['std']:.4f}  @1e-3 {row['aoc_fmr1e-3']:.4f}  "
              f"SDD wins {row['sdd_wins']}/{len(args.seeds)}")
    print(f"{RESULTS_DIR / name}.json in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
