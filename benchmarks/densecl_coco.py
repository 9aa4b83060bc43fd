"""DenseCL's whole protocol on real images, at a tiny scale: pretraining (DenseCL and MoCo-v2 mode, same budget) on
../shared/data/coco_mini/train2017 read as a plain image folder, then the fine-tuning evaluation with COCO instance
polygons as semantic masks (fine-tune on train2017's annotated images, mIoU on val2017's), against random init.

    python benchmarks/densecl_coco.py [--data ../shared/data/coco_mini] [--steps 150] [--threads 1]

Writes benchmarks/results/densecl_coco.json. The scale (80 + 79 images, 64 px, a width-8 ResNet-18, minutes of CPU)
is far from the paper's (118k images, 224 px, ResNet-50, 800 epochs on 8 GPUs): the numbers test the pipeline.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from _common import RESULTS_DIR, machine
from lowlabel.engine.runtime import Runtime, set_threads
from lowlabel.files import write_json
from lowlabel.methods.densecl import demo
from lowlabel.methods.densecl.data import IGNORE, coco_labelled
from lowlabel.methods.densecl.finetune import finetune_miou
from lowlabel.methods.densecl.recipe import train
from lowlabel.metrics.segmentation import confusion_miou

SIZE = 64
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "coco_mini")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    runtime = Runtime(device=torch.device("cpu"))
    t0 = time.perf_counter()
    labelled, names = coco_labelled(args.data / "annotations" / "instances_train2017.json", args.data / "train2017",
                                    size=SIZE)
    test, _ = coco_labelled(args.data / "annotations" / "instances_val2017.json", args.data / "val2017", size=SIZE)
    backbones, losses = {}, {}
    for name, lam in demo.LAMBDAS.items():
        cfg = demo.demo_config(quick=False, seed=args.seed, lam=lam)
        cfg.aug.load_size, cfg.aug.image_size = SIZE + SIZE // 4, SIZE  # 80 px images, 64 px views
        cfg.batch_size, cfg.queue_size, cfg.train.max_steps = 16, 64, args.steps  # 80 images: a queue of 4 batches
        model = demo.seeded_model(cfg, args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(cfg, data=args.data / "train2017", run_dir=Path(tmp), runtime=runtime, resume=False,
                            model=model)
        losses[name] = summary["final_losses"]
        backbones[name] = model.encoder_q.backbone
    backbones["random init"] = demo.seeded_model(cfg, args.seed).encoder_q.backbone
    keep = test.masks != IGNORE
    background_only = confusion_miou(torch.zeros_like(test.masks)[keep], test.masks[keep], test.n_classes)
    miou = {name: finetune_miou(copy.deepcopy(b), labelled, test, cfg=demo.finetune_config(args.seed),
                                runtime=runtime) for name, b in backbones.items()}
    payload = {"data": str(args.data), "pretrain_images": len(list((args.data / "train2017").glob("*.jpg"))),
               "finetune_images": len(labelled.images), "test_images": len(test.images), "classes": len(names) + 1,
               "size": SIZE, "pretrain_steps": args.steps, "pretrain_batch": 16, "queue": 64, "seed": args.seed,
               "finetune": vars(demo.finetune_config(args.seed)), "miou": miou, "background_only": background_only,
               "final_losses": losses,
               "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(), "machine": machine()}
    path = write_json(RESULTS_DIR / "densecl_coco.json", payload)
    print(path, {k: round(v, 4) for k, v in miou.items()})


if __name__ == "__main__":
    main()
