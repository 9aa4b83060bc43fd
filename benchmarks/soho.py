"""SOHO hot paths: the Visual Dictionary lookup (2048 codes x 768 dims, as released) against torch.cdist, and the
pre-training step (forward + backward + AdamW) at two image sizes.

    python benchmarks/soho.py [--quick] [--threads 1]

Lookup: `VisualDictionary.assign` (||x||² + ||e||² - 2 x·eᵀ, one matrix product, argmin) against
`torch.cdist(x, e).argmin(1)` (the obvious alternative), at N = 1,024 .. 16,384 feature rows (a batch of 64
image-caption pairs at 1000x600 has 64 x 16 x 10 = 10,240 tokens); also the training-mode forward (lookup +
moving-average update + straight-through output). Step: the demo's SOHO (width-8 ResNet-18 small stem, hidden 128,
2 layers, 128 codes) on 8 images x 4 captions of 16 tokens, at 64 and 128 px.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure, write_results
from lowlabel.nn.quantize import VisualDictionary


def lookup_rows(sizes: list[int], repeat: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    vd = VisualDictionary(2048, 768, 0.4, generator=gen)
    for n in sizes:
        x = torch.randn(n, 768, generator=gen)
        ours = vd.assign(x)
        ref = torch.cdist(x, vd.embed).argmin(1)
        agree = float((ours == ref).float().mean())
        t_ours = measure(lambda x=x: vd.assign(x), repeat=repeat, warmup=1)
        t_cdist = measure(lambda x=x: torch.cdist(x, vd.embed).argmin(1), repeat=repeat, warmup=1)
        vd.train()
        t_fwd = measure(lambda x=x: vd(x), repeat=repeat, warmup=1)
        rows.append({"case": "lookup", "rows": n, "codes": 2048, "dim": 768,
                     "assign_ms": 1e3 * t_ours["seconds_best"], "cdist_ms": 1e3 * t_cdist["seconds_best"],
                     "train_forward_ms": 1e3 * t_fwd["seconds_best"],
                     "assign_peak_mib": t_ours["peak_mib"], "cdist_peak_mib": t_cdist["peak_mib"],
                     "speedup": t_cdist["seconds_best"] / t_ours["seconds_best"], "same_index": agree})
    return rows


def step_rows(sizes: list[int], repeat: int) -> list[dict]:
    from lowlabel.methods.soho import demo, recipe
    from lowlabel.methods.soho.data import PairBatches

    rows = []
    for size in sizes:
        b = demo.budget(quick=True)
        cfg = demo.demo_config(b, seed=0)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_length=16, scale=[size, size]),
                                  world=dataclasses.replace(cfg.world, n_train=16, size=size))
        corpus, _ = recipe.load_corpus(cfg, None, "train")
        batch = next(iter(PairBatches(corpus, 8).epoch(0)))
        model = recipe.build_model(cfg)
        opt = torch.optim.AdamW(recipe.param_groups(model, cfg), lr=1e-4, eps=1e-6, weight_decay=0.01)
        step_fn = recipe.make_step_fn(cfg)
        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt, step_fn: object = step_fn,
                 batch: dict = batch, counter: list[int] = [0]) -> None:  # noqa: B006 - the step count of this size
            counter[0] += 1
            losses, _ = step_fn(model, batch, counter[0])
            opt.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            opt.step()

        t = measure(step, repeat=repeat, warmup=1)
        tokens = (size // 16) ** 2
        rows.append({"case": "pretrain step", "image_px": size, "images": 8, "pairs": 32, "visual_tokens": tokens,
                     "step_ms": 1e3 * t["seconds_best"], "step_mean_ms": 1e3 * t["seconds_mean"],
                     "peak_mib": t["peak_mib"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [1024, 4096] if args.quick else [1024, 4096, 16384]
    repeat = 2 if args.quick else 5
    rows = lookup_rows(sizes, repeat) + step_rows([64, 128], repeat)
    load = os.getloadavg()[0]  # the machine is shared: times inflate with its load
    write_results("soho", rows, notes=f"{args.threads} thread(s); best of {repeat}; {os.cpu_count()} cores shared "
                                      f"with other jobs, 1-minute load average {load:.1f} at the end")


if __name__ == "__main__":
    main()
