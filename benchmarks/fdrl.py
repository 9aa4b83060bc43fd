"""FDRL benchmarks: training-step time and peak memory of ResNet-18 + FDRL head against ResNet-18 + linear head, and
the FER2013 real-data runs (FDRL head against the linear head, and on the frozen dlib feature also against an MLP head
of the FDRL head's size and depth; 3 paired seeds). The faces-world demo's numbers: benchmarks/fdrl_demo.py.

    python benchmarks/fdrl.py [--quick]                # step benchmark -> benchmarks/results/fdrl.json
    python benchmarks/fdrl.py --fer2013 mobilenet_v2   # -> benchmarks/results/fdrl_fer2013_mobilenet_v2.json
    python benchmarks/fdrl.py --fer2013 dlib           # -> benchmarks/results/fdrl_fer2013_dlib.json

Step: one full training step (forward, the method's losses, backward, Adam) of the paper's network (ResNet-18, P = 512;
head M = 9, D = 128, 7 classes) on random 224-px images (quick: 112 px), batch 32 and 128; and the head alone on
pooled features (batch 32, 128, 1024), where the heads' difference is not hidden by the backbone.
FER2013 data: ../shared/data/fer2013 (train/ = a fixed part of the official Training split, test/ = PrivateTest);
train on train/, report accuracy on test/ after the last epoch; nothing is selected on test/.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure, write_results

FER2013 = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013"
SEEDS = (0, 1, 2)


def step_rows(quick: bool) -> list[dict]:
    from lowlabel.engine.recipe import build_optimizer
    from lowlabel.methods.fdrl import recipe

    size = 112 if quick else 224
    rows = []
    for part, batches in (("resnet18 + head", (32, 128)), ("head alone", (32, 128, 1024))):
        for batch in batches:
            for head in ("linear", "fdrl"):
                cfg = recipe.Config(head=head, image_size=size)
                torch.manual_seed(0)
                model = recipe.build_model(cfg)
                if part == "head alone":
                    model = model.head
                    inputs = torch.randn(batch, 512)
                else:
                    inputs = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
                labels = torch.randint(0, 7, (batch,))
                opt = build_optimizer(model.parameters(), cfg.optim)

                def step(model=model, inputs=inputs, labels=labels, opt=opt, cfg=cfg) -> None:
                    out = model(recipe.prepare(inputs)) if inputs.dtype == torch.uint8 else model(inputs)
                    loss = sum(recipe.objective(cfg, out, labels).values())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                repeat = 2 if part == "resnet18 + head" else 20
                m = measure(step, repeat=repeat if not quick else max(1, repeat // 2), warmup=1)
                params = sum(p.numel() for p in model.parameters())
                rows.append({"part": part, "head": head, "batch": batch, "input_px": size if part != "head alone"
                             else 0, "params": params, "step_s": m["seconds_best"], "peak_mib": m["peak_mib"]})
                print(rows[-1], flush=True)
    return rows


def fer2013_config(backbone: str, head: str, seed: int, quick: bool):
    """The stated CPU budget of each backbone (docs/methods/fdrl.md)."""
    from lowlabel.methods.fdrl import recipe

    if backbone == "dlib":  # frozen 128-d embedding, heads only: 200 images per class, 30 epochs, lr 1e-3
        cfg = recipe.Config(backbone="dlib", head=head, cache_dir="/tmp/fdrl_cache", flip=False,
                            train_per_class=40 if quick else 200)
        train = dataclasses.replace(cfg.train, epochs=3 if quick else 30)
        optim = dataclasses.replace(cfg.optim, lr=1e-3)
    else:  # ImageNet MobileNetV2 end to end at 64 px, 100 images per class, 3 epochs, Adam 1e-4 constant
        cfg = recipe.Config(backbone="mobilenet_v2", pretrained="imagenet", head=head, image_size=64,
                            train_per_class=20 if quick else 100)
        train = dataclasses.replace(cfg.train, epochs=1 if quick else 3)
        optim = dataclasses.replace(cfg.optim, schedule="constant")
    train = dataclasses.replace(train, seed=seed, log_every=50, checkpoint_every=10**9)
    # the EPN initialisation chosen on the faces tuning world (docs/methods/fdrl.md), fixed before any FER2013 run
    return dataclasses.replace(cfg, train=train, optim=optim, epn_init_scale=0.01)


def fer2013_rows(backbone: str, quick: bool, seeds: tuple[int, ...] = SEEDS) -> list[dict]:
    from lowlabel.engine import runtime as rt
    from lowlabel.methods.fdrl import recipe

    if not FER2013.is_dir():
        print(f"{FER2013} not found: skipped")
        return []
    runtime = rt.init("cpu")
    test = recipe.load_split(fer2013_config(backbone, "fdrl", 0, quick), FER2013, "test")
    rows = []
    for seed in seeds[:1] if quick else seeds:
        # on a frozen feature the linear head is a linear classifier: the MLP of the FDRL head's size is the control
        for head in ("linear", "mlp", "fdrl") if backbone == "dlib" else ("linear", "fdrl"):
            cfg = fer2013_config(backbone, head, seed, quick)
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                _, summary = recipe.train_model(cfg, data=FER2013, run_dir=Path(d), runtime=runtime, resume=False,
                                                test=test, figures=False)
            rows.append({"backbone": backbone, "head": head, "seed": seed, "n_train": summary["n_train"],
                         "n_test": summary["n_test"], "epochs": cfg.train.epochs, "image_px": cfg.image_size,
                         "accuracy": summary["test"]["accuracy"],
                         "balanced_accuracy": summary["test"]["balanced_accuracy"],
                         "seconds": time.perf_counter() - t0})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (a smoke run)")
    parser.add_argument("--fer2013", choices=("mobilenet_v2", "dlib"), help="run the FER2013 comparison instead")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="FER2013 seeds (a subset writes fdrl_fer2013_<backbone>_seeds<...>.json)")
    parser.add_argument("--merge", action="store_true", help="join the per-seed FER2013 files of --fer2013 into one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.fer2013 and args.merge:
        import json

        from _common import RESULTS_DIR

        parts = sorted(RESULTS_DIR.glob(f"fdrl_fer2013_{args.fer2013}_seeds*.json"))
        rows = sorted((r for p in parts for r in json.loads(p.read_text())["rows"]), key=lambda r: (r["seed"],
                                                                                                   r["head"]))
        notes = json.loads(parts[0].read_text())["notes"] + f"; merged from {[p.name for p in parts]}"
        write_results(f"fdrl_fer2013_{args.fer2013}", rows, notes)
        return
    if args.fer2013:
        seeds = tuple(args.seeds)
        rows = fer2013_rows(args.fer2013, args.quick, seeds)
        cfg = fer2013_config(args.fer2013, "fdrl", 0, args.quick)
        notes = (f"FER2013 (../shared/data/fer2013): train on train/, accuracy on test/ (PrivateTest) after the last "
                 f"epoch; backbone {args.fer2013}, image {cfg.image_size} px, train_per_class {cfg.train_per_class}, "
                 f"{cfg.train.epochs} epochs, epn_init_scale {cfg.epn_init_scale}, Adam lr {cfg.optim.lr} betas "
                 f"{cfg.optim.betas}, {cfg.optim.schedule} schedule (milestones "
                 f"{[round(m, 3) for m in cfg.optim.milestones]} of the run), batch {cfg.batch_size}, "
                 f"{args.threads} thread(s){'; QUICK' if args.quick else ''}")
        suffix = "_quick" if args.quick else "" if seeds == SEEDS else "_seeds" + "".join(map(str, seeds))
        if rows:
            write_results(f"fdrl_fer2013_{args.fer2013}{suffix}", rows, notes)
        return
    rows = step_rows(args.quick)
    write_results("fdrl_quick" if args.quick else "fdrl", rows,
                  f"one training step (forward, losses, backward, Adam), best of repeats; peak = RSS growth; "
                  f"{args.threads} thread(s){'; QUICK (112 px)' if args.quick else ''}")


if __name__ == "__main__":
    main()
