"""ACR on real data at a small CPU budget: fine-tuning the ImageNet MobileNetV2 against fine-tuning + AKC + ARC on
FER2013 (4 labels per class, the rest of train/ unlabelled, accuracy on test/) and Omniglot (the last 5 drawings of
each character held out), over paired seeds (same labelled split, initialisation and batches per seed).

python -m lowlabel.methods.acr.realdata fer2013 /work/shared/data/fer2013 benchmarks/results/acr_fer2013.json
python -m lowlabel.methods.acr.realdata omniglot /work/shared/data/omniglot_small benchmarks/results/acr_omniglot.json
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import time
from pathlib import Path

import torch

from lowlabel.engine.demo import mean_over_seeds
from lowlabel.engine.recipe import TrainConfig
from lowlabel.engine.runtime import init
from lowlabel.files import write_json
from lowlabel.methods.acr import data as acr_data
from lowlabel.methods.acr import recipe

STEPS = 200
IMAGE_SIZE, RESIZE = 48, 55  # FER2013 images are 48 x 48; the same crop/resize ratio as 224/256


def budget_config(dataset: str, seed: int, steps: int = STEPS) -> recipe.Config:
    """The CPU-budget setting: ImageNet MobileNetV2 source (1000-way head: the AKC gate over ImageNet classes),
    48 px crops of 55 px images, 16 labelled + 32 unlabelled per step, `steps` steps; everything else official
    (SGD 0.01 Nesterov, λ_AKC 1, λ_ARC 50, thresholds 0.7, tables 128, warm-up 100) except the lr schedule: the
    engine's `cosine`, with which the recorded runs were made before the official `truncated_cosine` existed."""
    base = recipe.Config()
    return recipe.Config(dataset="omniglot" if dataset == "omniglot" else "folders", labelled_per_class=4,
                         held_out_per_class=5, image_size=IMAGE_SIZE, resize=RESIZE, labelled_bs=16,
                         unlabelled_bs=32, source="imagenet-mobilenet_v2",
                         train=TrainConfig(max_steps=steps, log_every=25, checkpoint_every=10**9, seed=seed),
                         optim=dataclasses.replace(base.optim, schedule="cosine"))


def load_splits(dataset: str, root: Path) -> tuple[acr_data.ImageSet, acr_data.ImageSet]:
    if dataset == "omniglot":
        everything = acr_data.read_zip_folders(sorted(glob.glob(str(root / "*.zip"))))
        train_idx, test_idx = acr_data.held_out_split(everything.labels, 5)
        return everything.subset(train_idx), everything.subset(test_idx)
    splits = acr_data.read_split_folders(root)
    return splits["train"], splits["test"]


def run(dataset: str, root: Path, out: Path, seeds: tuple[int, ...] = (1, 2, 3), steps: int = STEPS,
        work: Path = Path("/tmp/acr_realdata")) -> dict:
    """Both variants over `seeds`; writes `out` (JSON) and returns it."""
    t0 = time.perf_counter()
    train_set, test_set = load_splits(dataset, root)
    train_x = acr_data.image_tensor(train_set, RESIZE)
    test_x, test_y = acr_data.image_tensor(test_set, RESIZE), torch.from_numpy(test_set.labels)
    runtime = init("cpu", seed=0)
    runs: dict[str, list[dict[str, float]]] = {}
    for seed in seeds:
        cfg = budget_config(dataset, seed, steps)
        chosen = acr_data.per_class_split(train_set.labels, cfg.labelled_per_class, seed)[0]
        prepared = recipe.Prepared(train_x[chosen], torch.from_numpy(train_set.labels[chosen]), train_x, test_x,
                                   test_y, list(train_set.classes), [train_set.names[int(i)] for i in chosen])
        for name, variant in (("fine-tune", dataclasses.replace(cfg, lambda_akc=0.0, lambda_arc=0.0)),
                              ("fine-tune + AKC + ARC", cfg)):
            run_dir = work / dataset / name.replace(" ", "").replace("+", "_") / f"seed{seed}"
            _, summary = recipe.train_model(variant, data=root, run_dir=run_dir, runtime=runtime, resume=False,
                                            prepared=prepared)
            runs.setdefault(name, []).append({"accuracy": summary["test_accuracy"], "seconds": summary["seconds"]})
            print(dataset, name, seed, summary["test_accuracy"], flush=True)
    ft, acr = ([r["accuracy"] for r in runs[k]] for k in ("fine-tune", "fine-tune + AKC + ARC"))
    result = {"dataset": dataset, "data": str(root), "seeds": list(seeds), "steps": steps,
              "image_size": IMAGE_SIZE, "resize": RESIZE, "labelled_per_class": 4, "labelled_bs": 16,
              "unlabelled_bs": 32, "source": "ImageNet MobileNetV2 (1000-way head)", "threads": torch.get_num_threads(),
              "n_train": len(train_set), "n_test": len(test_set), "classes": len(train_set.classes),
              "mean": mean_over_seeds(runs), "per_seed": runs,
              "wins": sum(a > f for a, f in zip(acr, ft, strict=True)), "seconds": time.perf_counter() - t0}
    write_json(out, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["fer2013", "omniglot"])
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run(args.dataset, args.root, args.out, tuple(int(s) for s in args.seeds.split(",")), args.steps)


if __name__ == "__main__":
    main()
