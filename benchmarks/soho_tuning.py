"""SOHO pre-training on the tuning world (issue #17): does ITM learn at a given budget?

    python benchmarks/soho_tuning.py --steps 1000 --lr 1e-3 --schedule constant [--tasks itm]
        -> results/soho_tuning_<tasks>_<schedule>_<lr>_<steps>.json

The demo model (`demo.demo_config`) pre-trains on scenes 0..1599 of world `demo.TUNING_SEED` (never an evaluation
seed); rows: the mean ITM loss per 50 steps (chance: ln 2 = 0.693) and the pre-trained model's zero-shot retrieval
R@1/5 over the first captions of the 100 test scenes the demo uses (chance R@1: 1%).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results
from lowlabel.engine import runtime as rt
from lowlabel.methods.soho import demo, recipe
from lowlabel.methods.soho.data import WordPieceTokenizer, build_corpus, prepare_image
from lowlabel.methods.soho.retrieval import retrieval_recalls, score_pairs
from lowlabel.methods.soho.world import world_config, world_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", default="step", help="step (official shape) | constant | cosine")
    parser.add_argument("--tasks", default="mlm,mvm,itm")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tasks = tuple(args.tasks.split(","))
    b = dataclasses.replace(demo.budget(False), lr=args.lr, pretrain_steps=args.steps)
    cfg = demo.demo_config(b, demo.TUNING_SEED)
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, schedule=args.schedule))
    tok = WordPieceTokenizer(cfg.data.max_length)
    shapes = world_config(64, 3, cfg.data.sentence_group)
    pre = world_split(demo.TUNING_SEED, 0, b.n_pretrain, shapes)
    test = world_split(demo.TUNING_SEED, b.n_pretrain + b.n_downstream, b.n_test, shapes)
    corpus = build_corpus([prepare_image(i, cfg.data.scale) for i in pre.images], pre.captions, tok, group=4,
                          seed=demo.TUNING_SEED)
    ids, att = tok([c[0] for c in test.captions])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        model, _ = recipe.train_model(cfg, data=None, run_dir=Path(out), runtime=rt.init("cpu", seed=0),
                                      resume=False, corpus=corpus, tasks=tasks, evaluate_world=False)
        logged = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    seconds = time.perf_counter() - t0
    itm = [(r["step"], r["itm"]) for r in logged if "itm" in r]
    rows = [{"steps": f"{s + 1}-{s + 50}", "itm_mean": statistics.fmean(v for t, v in itm if s < t <= s + 50)}
            for s in range(0, args.steps, 50) if any(s < t <= s + 50 for t, _ in itm)]
    images = [prepare_image(i, cfg.data.scale) for i in test.images]
    zero_shot = retrieval_recalls(score_pairs(model, images, ids, att, batch=512), torch.arange(b.n_test), ks=(1, 5))
    rows.append({"steps": "zero-shot retrieval", **zero_shot})
    name = f"soho_tuning_{'-'.join(tasks)}_{args.schedule}_{args.lr:g}_{args.steps}"
    write_results(name, rows, notes=f"tuning world {demo.TUNING_SEED}; tasks {tasks}; lr {args.lr:g} "
                                    f"({args.schedule}); {args.steps} steps; {seconds:.0f} s on one thread")


if __name__ == "__main__":
    main()
