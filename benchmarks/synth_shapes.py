"""Shapes world throughput on one core: scenes/s of `generate_scene` and of `ShapesDataset.__getitem__`, and the
all-pairs similarity judge (sparse matrix products) against the pairwise set-based judge.

Run: `python benchmarks/synth_shapes.py [--quick]`; writes benchmarks/results/synth_shapes.json.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch

from _common import measure, write_results
from lowlabel.data.synth.shapes import (
    ShapesConfig,
    ShapesDataset,
    generate_scene,
    scene_similarity,
    scene_similarity_matrix,
)


def cpu_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Best process CPU time of `repeat` calls: what one core spends, less sensitive than wall time to other load."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer scenes and repeats")
    args = parser.parse_args()
    torch.set_num_threads(1)
    chunk, repeat = (100, 3) if args.quick else (400, 7)
    rows = []
    for size in (64, 128):
        for domain in ("source", "target"):
            cfg = ShapesConfig(size=size, domain=domain)
            ds = ShapesDataset(chunk, seed=0, cfg=cfg)
            cases = {
                "generate_scene": lambda cfg=cfg: [
                    generate_scene(np.random.default_rng([0, i]), cfg) for i in range(chunk)
                ],
                "ShapesDataset[i]": lambda ds=ds: [ds[i] for i in range(len(ds))],
            }
            for what, fn in cases.items():
                wall = measure(fn, repeat=repeat, warmup=1)
                rows.append({
                    "case": f"{what} {size}x{size} {domain}",
                    "samples_per_s": chunk / wall["seconds_best"],
                    "cpu_samples_per_s": chunk / cpu_seconds(fn, repeat),
                    "peak_mib": wall["peak_mib"],
                })  # fmt: skip
    for n in (100, 400) if args.quick else (200, 1000):
        scenes = [generate_scene(np.random.default_rng([1, i])) for i in range(n)]
        judges = {"judge all pairs, sparse products": lambda scenes=scenes: scene_similarity_matrix(scenes)}
        if n <= 400:
            judges["judge all pairs, pairwise sets"] = lambda scenes=scenes: [
                [scene_similarity(a, b) for b in scenes] for a in scenes
            ]
        for what, fn in judges.items():
            wall = measure(fn, repeat=3)
            rows.append({
                "case": f"{what} N={n} (pairs/s)",
                "samples_per_s": n * n / wall["seconds_best"],
                "cpu_samples_per_s": n * n / cpu_seconds(fn, 3),
                "peak_mib": wall["peak_mib"],
            })  # fmt: skip
    load = os.getloadavg()[0]
    write_results(
        "synth_shapes",
        rows,
        notes=f"one thread; scenes/s (judge rows: pairs/s), best of {repeat} runs of {chunk} scenes, by wall time "
        f"and by process CPU time; 1-min load average at the end {load:.1f} on {os.cpu_count()} cores",
    )


if __name__ == "__main__":
    main()
