"""The real-data check of the SOHO issue: pre-train on the captions of coco_mini's 80 train2017 images, evaluate
image-text retrieval R@1/5 both ways on its 79 val2017 images, pre-trained against not pre-trained (the same
initial network: ImageNet MobileNetV2 image side, MiniLM text side, fresh neck and ITM head), per seed.

Tiny but real: 80 training images cannot teach a vision-language model much; the numbers say whether pre-training
moves retrieval above the chance level of an untrained ITM head at all. Run:

    python -m lowlabel.methods.soho.realdata [--root /work/shared/data/coco_mini] [--quick]

writes benchmarks/results/soho_coco_mini.json (or the --out file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from lowlabel.engine.runtime import init
from lowlabel.files import write_json
from lowlabel.methods.soho import recipe


def real_config(steps: int, seed: int) -> recipe.Config:
    """MobileNetV2 (ImageNet, offline) + 3 MiniLM layers (hidden 384, 12 heads, FFN 1536), 256 codes, official
    decay/masking/losses, 16 tokens; images keep-ratio into (288, 192); 8 images x 4 captions per step; the official
    optimiser (AdamW 1e-4, SGD 1e-2 on the backbone), warm-up 10% of the steps, official milestone fractions;
    retrieval over the first caption."""
    model = recipe.ModelConfig(backbone="mobilenet_v2", backbone_weights="imagenet", frozen_stages=1, hidden=384,
                               layers=3, heads=12, ffn=1536, text_init="minilm", num_codes=256)
    data = recipe.DataConfig(images_per_batch=8, sentence_group=4, max_length=16, scale=[288, 192])
    cfg = recipe.Config(model=model, data=data, eval_captions=1, eval_batch=256)
    train = dataclasses.replace(cfg.train, max_steps=steps, seed=seed, log_every=10, checkpoint_every=10**9)
    return dataclasses.replace(cfg, train=train, optim=dataclasses.replace(cfg.optim, warmup_steps=max(1, steps // 10)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/work/shared/data/coco_mini"))
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[4] / "benchmarks/results/soho_coco_mini.json")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/soho_coco_mini"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 steps, 1 seed (a check that it runs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, seeds = (2, args.seeds[:1]) if args.quick else (args.steps, args.seeds)
    runtime = init("cpu")
    train_file = args.root / "annotations/captions_train2017.json"
    val_file = args.root / "annotations/captions_val2017.json"
    t0 = time.perf_counter()
    base = real_config(steps, seeds[0])
    train_corpus = recipe.load_corpus(base, train_file, "train")[0]
    val = recipe.load_corpus(base, val_file, "test")
    rows = []
    for seed in seeds:
        cfg = real_config(steps, seed)
        untrained = recipe.build_model(cfg)
        before = recipe.evaluate_model(untrained, cfg, val_file, runtime, test=val)
        t1 = time.perf_counter()
        model, summary = recipe.train_model(cfg, data=train_file, run_dir=args.runs / f"seed{seed}", runtime=runtime,
                                            resume=False, corpus=train_corpus)
        after = recipe.evaluate_model(model, cfg, val_file, runtime, test=val)
        rows.append({"seed": seed, "not_pretrained": before, "pretrained": after,
                     "pretrain_seconds": time.perf_counter() - t1, "final_losses": summary["final_losses"]})
        print(json.dumps(rows[-1]), flush=True)
    payload = {"name": "soho_coco_mini", "date": time.strftime("%Y-%m-%d"),
               "train": {"file": str(train_file), "images": len(train_corpus.images),
                         "caption_groups": int(train_corpus.sample_image.shape[0])},
               "val": {"file": str(val_file), "images": len(val[0].images), "captions_per_image": 1},
               "steps": steps, "threads": args.threads, "config": dataclasses.asdict(base), "rows": rows,
               "chance": {"r1": 100 / len(val[0].images), "r5": 500 / len(val[0].images)},
               "seconds": time.perf_counter() - t0}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
