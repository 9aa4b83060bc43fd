"""SGP 2D demo, TUNING world only (seed 1000): test pose recall of the CAPS student every `--every` steps, trained on
the true F (oracle) and on the SIFT bootstrap's verified pseudo-labels (round bs), to choose the demo's steps per round
and student (`--student random`: the ResNet-18 of width 16 from scratch; `imagenet`: the ImageNet MobileNetV2 encoder).

`python benchmarks/sgp_demo2d_tuning.py [--steps 600] [--every 100] [--jobs 2] [--student random|imagenet]`
-> benchmarks/results/sgp_demo2d_tuning[_<name>].json.
The evaluation worlds (seeds 0, 1, 2) are not touched here.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine
from lowlabel.engine import runtime as rt
from lowlabel.engine.trainer import Trainer
from lowlabel.files import write_json
from lowlabel.methods.sgp import demo2d, two_view

TUNING_SEED = 1000


def _config(lr: float, student: str) -> two_view.Config2D:
    cfg = demo2d.demo_config(quick=False, seed=TUNING_SEED, student=student)
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=lr))


def _curve(label_source: str, steps: int, every: int, out: Path, lr: float, student: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg = dataclasses.replace(_config(lr, student), supervised=label_source == "oracle")
    cfg = two_view.with_steps(cfg, steps)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_every=every))
    runtime = rt.init("cpu")
    test = two_view.world_view_pairs(cfg, "test")
    task = two_view.RelativePoseTask(cfg, two_view.world_view_pairs(cfg, "train"), test)
    labels = task.teach(None, -1)
    kept = [(k, lab) for k, lab in enumerate(labels) if task.verified(lab)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = task.build_model()
    curve = [{"step": 0, **{k: v for k, v in task.test(model).items() if k != "test_rows"}}]

    def eval_fn(net: torch.nn.Module, step: int) -> dict[str, float]:
        metrics = task.test(net)
        curve.append({"step": step, **{k: v for k, v in metrics.items() if k != "test_rows"}})
        return {k: v for k, v in metrics.items() if k != "test_rows"}

    t0 = time.perf_counter()
    Trainer(model, task.step_fn, config=cfg.train, optim=cfg.optim, runtime=runtime,
            run_dir=out / f"{student}_{label_source}_lr{lr:g}", eval_fn=eval_fn).fit(task.batches(kept, -1, runtime))
    return {"labels": label_source, "lr": lr, "student": student, "verified": len(kept), "pairs": len(labels),
            "curve": curve, "seconds": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-4], help="Adam learning rates to compare")
    parser.add_argument("--out", type=Path, default=Path("runs/sgp_demo2d_tuning"))
    parser.add_argument("--labels", nargs="+", default=["oracle", "sift_bs"], choices=["oracle", "sift_bs"])
    parser.add_argument("--student", default="random", choices=sorted(demo2d.STUDENTS))
    parser.add_argument("--name", default="", help="suffix of the result file")
    args = parser.parse_args()
    cfg = _config(args.lr[0], args.student)
    sift = two_view.pose_metrics(two_view.pose_rows(two_view.world_view_pairs(cfg, "test"), None, cfg))
    runs = [(source, lr) for lr in args.lr for source in args.labels]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        curves = list(pool.map(_curve, [s for s, _ in runs], [args.steps] * len(runs), [args.every] * len(runs),
                               [args.out] * len(runs), [lr for _, lr in runs], [args.student] * len(runs)))
    for c in curves:
        for row in c["curve"]:
            print(c["labels"], c["lr"], row)
    name = "sgp_demo2d_tuning" + (f"_{args.name}" if args.name else "")
    path = write_json(RESULTS_DIR / f"{name}.json", {
        "name": name, "date": time.strftime("%Y-%m-%d"), "machine": machine(), "seed": TUNING_SEED,
        "world": dataclasses.asdict(cfg.world), "student": dataclasses.asdict(cfg.student),
        "num_queries": cfg.num_queries, "sift": {k: v for k, v in sift.items() if k != "test_rows"},
        "curves": curves})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
