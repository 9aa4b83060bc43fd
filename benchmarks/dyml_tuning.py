"""DyML demo budget on the tuning world (shapes seed 100, never an evaluation seed): every loss at 400 and 1600
steps (and any --lr), with what shows under-training: the training-loss curve, the fine accuracy of the training
images against the loss's own proxies (CSL) or fine class weights (CosFace), how far those moved from their
initialisation (norm, cosine), each level's CSL term measured against the training class means (the same yardstick
for every loss; `viol` = share of images whose hardest other-level class mean is within that level's margin), and
the test metrics per level. Writes benchmarks/results/dyml_tuning.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results
from lowlabel.engine import runtime as rt
from lowlabel.methods.dyml import demo, recipe
from lowlabel.methods.dyml.batches import embed_images
from lowlabel.methods.dyml.losses import proxy_hierarchy

MARGINS = (0.25, 0.35, 0.45)


def level_terms(emb: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, scale: float = 32.0) -> dict:
    """Each level's CSL term of unit embeddings against `proxies` (one per fine class), the share of margin
    violations per level, the mean positive cosine and the fine accuracy (nearest proxy)."""
    table = proxy_hierarchy(labels, proxies.shape[0])
    sims = emb @ F.normalize(proxies, dim=1).t()
    pos = sims.gather(1, labels[:, :1]).squeeze(1)
    out = {"pos_cos": float(pos.mean()), "fine_acc": float((sims.argmax(1) == labels[:, 0]).float().mean())}
    for level, (name, margin) in enumerate(zip(demo.LEVELS, MARGINS, strict=True)):
        negative = table[:, level][None] != labels[:, level : level + 1]
        lse = torch.logsumexp(scale * sims.masked_fill(~negative, -torch.inf), 1)
        out[f"csl_{name}"] = float(F.softplus(lse - scale * pos + scale * margin).mean())
        out[f"viol_{name}"] = float((sims.masked_fill(~negative, -2).amax(1) - pos + margin > 0).float().mean())
    return out


def class_weights(criterion: torch.nn.Module) -> torch.Tensor | None:
    """CSL's proxies or the fine-level CosFace class weights, (fine classes, dim); None for Multi-Similarity (a
    pair loss has none)."""
    if hasattr(criterion, "weight"):
        return criterion.weight.detach()
    return criterion.losses[0].W.detach().t() if hasattr(criterion.losses[0], "W") else None


def one_run(loss: str, steps: int, lr: float, seed: int, threads: int) -> dict:
    """Train one model (a `recipe.with_loss` spec) on the tuning world with `steps` and `lr` (otherwise the demo's
    config) and diagnose it."""
    torch.set_num_threads(threads)
    runtime = rt.init("cpu", seed=0)
    cfg = demo.demo_config("shapes", loss, seed, quick=False)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=steps, log_every=steps // 8),
                              optim=dataclasses.replace(cfg.optim, lr=lr))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        model, resolved, summary = recipe.train_model(cfg, data=None, run_dir=Path(out), runtime=runtime,
                                                      resume=False)
        curve = [round(json.loads(line)["loss"], 3) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        seconds = time.perf_counter() - t0
    images, labels = recipe.load_train(resolved, None)
    d, lab = resolved.data, torch.from_numpy(labels)
    emb = embed_images(model, images, size=d.image_size, resize=d.test_resize, mean=d.mean, std=d.std,
                       batch_size=d.eval_batch)
    means = torch.zeros(int(lab[:, 0].max()) + 1, emb.shape[1]).index_add_(0, lab[:, 0], emb)
    start, end = class_weights(recipe.build_model(resolved).criterion), class_weights(model.criterion)
    row = {"loss": loss, "steps": steps, "lr": lr, "seed": seed, "seconds": round(seconds, 1),
           "classes": summary["n_classes"], "loss_curve": curve}
    if start is not None and end is not None:
        row.update({"train_fine_acc_own_weights": level_terms(emb, lab, end)["fine_acc"],
                    "weight_norm_start": float(start.norm(dim=1).mean()),
                    "weight_norm_end": float(end.norm(dim=1).mean()),
                    "weight_cos_to_start": float(F.cosine_similarity(start, end).mean())})
    row.update({f"train_{k}": v for k, v in level_terms(emb, lab, means).items()})
    row.update({f"test_{level}_{k}": summary["test"][level][k] for level in demo.LEVELS for k in demo.KEYS})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, nargs="+", default=[400, 1600])
    parser.add_argument("--lr", type=float, nargs="+", default=[demo.LR])
    parser.add_argument("--losses", nargs="+", default=list(demo.MODELS.values()),
                        help="recipe.with_loss specs, e.g. level_sum:multi_similarity")
    parser.add_argument("--name", default="dyml_tuning", help="result file benchmarks/results/NAME.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, one process each")
    args = parser.parse_args()
    seed = demo.TUNING_SEEDS[0]
    grid = [(loss, steps, lr, seed, args.threads) for steps in args.steps for lr in args.lr for loss in args.losses]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(one_run, *zip(*grid, strict=True)))
    write_results(args.name, rows, notes=f"shapes tuning world seed {seed}; demo config except steps and lr")


if __name__ == "__main__":
    main()
