"""The DenseCL demo's numbers, written by the command that made them.

    python benchmarks/densecl_demo.py --world tuning --seeds 0        # choices: worlds 100 / 10100 / 30100
    python benchmarks/densecl_demo.py --seeds 0 1 2                   # evaluation: every stage, then --merge
    python benchmarks/densecl_demo.py --quick                         # what `lowlabel demo densecl --quick` runs

The same work split into single-thread jobs that can run side by side (each writes its part into --work):

    python benchmarks/densecl_demo.py --stage pretrain --start DenseCL --seeds 0      # and MoCo-v2, seeds 1, 2
    python benchmarks/densecl_demo.py --stage finetune --start DenseCL --seeds 0 --budgets 16 64 256
    python benchmarks/densecl_demo.py --merge --seeds 0 1 2

--merge reads the parts of the given seeds and writes benchmarks/results/densecl_demo_<mode>[_tuning].json and
the .png beside it (label-efficiency curve and pretraining InfoNCE curves). Budgets default to the demo's: 16, 64,
256 scenes for seed 0 and 16 for the other seeds (full mode), 16 in quick mode.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from _common import RESULTS_DIR, machine
from lowlabel.engine.runtime import Runtime, set_threads
from lowlabel.files import read_json, write_json
from lowlabel.methods.densecl import demo
from lowlabel.methods.densecl.model import build_backbone


def _name(quick: bool, tuning: bool) -> str:
    return f"densecl_demo_{'quick' if quick else 'full'}{'_tuning' if tuning else ''}"


def pretrain(start: str, seed: int, *, quick: bool, tuning: bool, work: Path) -> None:
    t0 = time.perf_counter()
    worlds = demo.tuning_worlds(seed) if tuning else demo.evaluation_worlds(seed)
    with tempfile.TemporaryDirectory() as tmp:
        backbone = demo.pretrained_backbone(start, worlds=worlds, seed=seed, quick=quick, out=Path(tmp),
                                            runtime=Runtime(device=torch.device("cpu")))
        curves = demo.loss_curves(Path(tmp))
    torch.save(backbone.state_dict(), work / f"{start}_seed{seed}.pt")
    write_json(work / f"{start}_seed{seed}_pretrain.json", {"curves": curves, "seconds": time.perf_counter() - t0})


def finetune(start: str, seed: int, budgets: tuple[int, ...], *, quick: bool, tuning: bool, work: Path) -> None:
    t0 = time.perf_counter()
    worlds = demo.tuning_worlds(seed) if tuning else demo.evaluation_worlds(seed)
    if start in demo.LAMBDAS:
        m = demo.demo_config(quick=quick, seed=0, lam=0.0).model
        backbone = build_backbone(m.arch, small_stem=m.small_stem, width=m.width)
        backbone.load_state_dict(torch.load(work / f"{start}_seed{seed}.pt", weights_only=True))
    else:
        backbone = demo.pretrained_backbone(start, worlds=worlds, seed=seed, quick=quick, out=work,
                                            runtime=Runtime(device=torch.device("cpu")))
    scores = demo.finetune_scores(backbone, worlds=worlds, seed=seed, budgets=budgets,
                                  runtime=Runtime(device=torch.device("cpu")))
    write_json(work / f"{start}_seed{seed}_finetune_{'_'.join(map(str, budgets))}.json",
               {"miou": scores, "seconds": time.perf_counter() - t0})
    print(start, seed, {n: round(v, 4) for n, v in scores.items()})


def merge(*, quick: bool, tuning: bool, seeds: list[int], work: Path) -> Path:
    results: dict[str, dict[int, list[float]]] = {name: {} for name in demo.STARTS}
    curves: dict[str, list[tuple[int, float]]] = {}
    seconds = 0.0
    for seed in seeds:
        for start in demo.STARTS:
            if start in demo.LAMBDAS:
                part = read_json(work / f"{start}_seed{seed}_pretrain.json")
                curves.update(part["curves"])
                seconds += part["seconds"]
            for path in sorted(work.glob(f"{start}_seed{seed}_finetune_*.json")):
                part = read_json(path)
                seconds += part["seconds"]
                for n, miou in part["miou"].items():
                    results[start].setdefault(int(n), []).append(miou)
    with tempfile.TemporaryDirectory() as tmp:
        result = demo.summarise(results, curves, quick=quick, tuning=tuning, out=Path(tmp), seconds=seconds)
        png = RESULTS_DIR / f"{_name(quick, tuning)}.png"
        shutil.copyfile(Path(tmp) / "densecl_demo.png", png)
    worlds = [vars(demo.tuning_worlds(s) if tuning else demo.evaluation_worlds(s)) for s in seeds]
    payload = {**result.to_json(), "seeds": seeds, "worlds": worlds, "per_budget": results, "png": png.name,
               "pretrain_steps": demo.demo_config(quick=quick, seed=0, lam=0.5).train.max_steps,
               "finetune": vars(demo.finetune_config(0)), "cpu_job_seconds": seconds,
               "curves": curves, "machine": machine()}
    path = write_json(RESULTS_DIR / f"{_name(quick, tuning)}.json", payload)
    print(path)
    for line in result.notes:
        print(line)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--world", choices=("evaluation", "tuning"), default="evaluation")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--stage", choices=("all", "pretrain", "finetune"), default="all")
    parser.add_argument("--start", choices=demo.STARTS, default=None)
    parser.add_argument("--budgets", type=int, nargs="+", default=None)
    parser.add_argument("--merge", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="folder for the parts (default: /tmp/<name>)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    tuning = args.world == "tuning"
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    work = args.work or Path(tempfile.gettempdir()) / _name(args.quick, tuning)
    work.mkdir(parents=True, exist_ok=True)
    if not args.merge:
        for seed in seeds:
            budgets = tuple(args.budgets) if args.budgets else demo.seed_budgets(seed, quick=args.quick)
            for start in [args.start] if args.start else demo.STARTS:
                if args.stage in ("all", "pretrain") and start in demo.LAMBDAS:
                    pretrain(start, seed, quick=args.quick, tuning=tuning, work=work)
                if args.stage in ("all", "finetune"):
                    finetune(start, seed, budgets, quick=args.quick, tuning=tuning, work=work)
    if args.merge or args.stage == "all":
        merge(quick=args.quick, tuning=tuning, seeds=seeds, work=work)


if __name__ == "__main__":
    main()
