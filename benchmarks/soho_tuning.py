"""SOHO pre-training on the tuning world (issue #17): does ITM learn at a given budget?

    python benchmarks/soho_tuning.py --steps 1000 --lr 1e-3 --schedule constant [--tasks itm] [--finetune]
        -> results/soho_tuning_<tasks>_<schedule>_<lr>_<steps>[_finetune].json

The demo model (`demo.demo_config`) pre-trains on scenes 0..1599 of world `demo.TUNING_SEED` (never an evaluation
seed); rows: the mean ITM loss per 50 steps (chance: ln 2 = 0.693) and the pre-trained model's zero-shot retrieval
R@1/5 over the first captions of the 100 test scenes the demo uses (chance R@1: 1%). `--finetune` then runs the
demo's retrieval fine-tuning (`demo._finetune_cfg`, the 150 downstream scenes' captions) from the pre-trained
weights with the variants of FINETUNE_VARIANTS and adds their retrieval R@1/5 and first/last ITM losses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results
from lowlabel.data.synth.shapes import ShapesConfig
from lowlabel.engine import runtime as rt
from lowlabel.methods.soho import demo, recipe
from lowlabel.methods.soho.data import WordPieceTokenizer, build_corpus, prepare_image
from lowlabel.methods.soho.model import SOHO
from lowlabel.methods.soho.retrieval import retrieval_recalls, score_pairs
from lowlabel.methods.soho.world import world_config, world_split

# (steps, lr, tasks): 1 step at lr 0 moves no weight, only the BN statistics and the dictionary (one batch); 60 steps
# at 1e-3 is the demo's retrieval fine-tuning; then lower lrs and fine-tuning with all pre-training tasks
FINETUNE_VARIANTS = ((1, 0.0, ("itm",)), (60, 1e-3, ("itm",)), (60, 3e-4, ("itm",)), (60, 1e-4, ("itm",)),
                     (60, 1e-3, recipe.TASKS))


def finetune_rows(pretrained: SOHO, cfg: recipe.Config, b: demo.DemoBudget, shapes: ShapesConfig,
                  evaluate: Callable[[SOHO], dict[str, float]], out: Path) -> list[dict]:
    """The demo's ITM fine-tuning of `pretrained` per FINETUNE_VARIANTS; rows of retrieval R@1/5 and the ITM loss
    at the first and last logged step (every 10 steps)."""
    tok = WordPieceTokenizer(cfg.data.max_length)
    down = world_split(demo.TUNING_SEED, b.n_pretrain, b.n_downstream, shapes)
    corpus = build_corpus([prepare_image(i, cfg.data.scale) for i in down.images], down.captions, tok, group=4,
                          seed=demo.TUNING_SEED)
    rows = []
    for steps, lr, tasks in FINETUNE_VARIANTS:
        ft = demo._finetune_cfg(cfg, dataclasses.replace(b, finetune_steps=steps))
        ft = dataclasses.replace(ft, optim=dataclasses.replace(ft.optim, lr=lr))
        run = out / f"ft_{steps}_{lr:g}_{'-'.join(tasks)}"
        model, _ = recipe.train_model(ft, data=None, run_dir=run, runtime=rt.init("cpu", seed=0), resume=False,
                                      corpus=corpus, init=pretrained, tasks=tasks, evaluate_world=False)
        itm = [json.loads(line)["itm"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        rows.append({"steps": f"fine-tune {steps} steps, lr {lr:g}, {'+'.join(tasks)}", **evaluate(model),
                     "itm_first": itm[0], "itm_last": itm[-1]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", default="step", help="step (official shape) | constant | cosine")
    parser.add_argument("--tasks", default="mlm,mvm,itm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--finetune", action="store_true", help="then the retrieval fine-tuning variants")
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

        def evaluate(m: SOHO) -> dict[str, float]:
            return retrieval_recalls(score_pairs(m, images, ids, att, batch=512), torch.arange(b.n_test), ks=(1, 5))

        rows.append({"steps": "zero-shot retrieval", **evaluate(model)})
        if args.finetune:
            rows += finetune_rows(model, cfg, b, shapes, evaluate, Path(out))
    name = f"soho_tuning_{'-'.join(tasks)}_{args.schedule}_{args.lr:g}_{args.steps}"
    name += "_finetune" if args.finetune else ""
    write_results(name, rows, notes=f"tuning world {demo.TUNING_SEED}; tasks {tasks}; lr {args.lr:g} "
                                    f"({args.schedule}); {args.steps} steps; {seconds:.0f} s on one thread")


if __name__ == "__main__":
    main()
