"""Volumes world throughput on one core: volumes/s of `generate_volume` and `VolumesDataset.__getitem__` at three
sizes (target: >= 20 volumes/s at 64x64x48), and the smooth field as three matrix products vs scipy.ndimage.zoom.
Rates per wall second and per CPU second (the two agree on a quiet machine; under load, trust the CPU one).

Run: `python benchmarks/synth_volumes.py [--quick]`; writes benchmarks/results/synth_volumes.json.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from threadpoolctl import threadpool_limits

from _common import measure, write_results
from lowlabel.data.synth.volumes import VolumeConfig, VolumesDataset, generate_volume, smooth_field

SIZES = ((48, 48, 32), (64, 64, 48), (112, 112, 80))


def timed(fn: Callable[[], Any], chunk: int, repeat: int) -> dict[str, float]:
    """`measure` (wall clock, peak memory) plus the best CPU time of this process per run, as rates per second.

    The CPU-time rate is what one core delivers when other processes share it (wall time then includes waiting)."""
    cpu: list[float] = []

    def run() -> None:
        t0 = time.process_time()
        fn()
        cpu.append(time.process_time() - t0)

    m = measure(run, repeat=repeat, warmup=1)
    return {"per_s": chunk / m["seconds_best"], "per_s_mean": chunk / m["seconds_mean"],
            "per_cpu_s": chunk / min(cpu[1:]), "peak_mib": m["peak_mib"]}


def size_rows(shape: tuple[int, int, int], chunk: int, repeat: int) -> list[dict[str, Any]]:
    """Rows for one volume size: generation, dataset items, and the smooth field two ways."""
    cfg = VolumeConfig(shape=shape)
    name = "x".join(map(str, shape))
    ds = VolumesDataset(chunk, seed=0, cfg=cfg)
    coarse = tuple(max(2, round(n * 8 / max(shape))) for n in shape)
    values = np.random.default_rng(0).standard_normal(coarse).astype(np.float32)
    factors = np.array(shape) / coarse
    cases = {
        f"generate_volume {name}": lambda: [generate_volume(np.random.default_rng([0, i]), cfg) for i in range(chunk)],
        f"dataset item {name}": lambda: [ds[i] for i in range(len(ds))],
        f"smooth field {name} (3 matrix products)":
            lambda: [smooth_field(np.random.default_rng(i), shape, 8) for i in range(chunk)],
        f"smooth field {name} (ndimage.zoom order 1)":
            lambda: [ndimage.zoom(values, factors, order=1, grid_mode=False) for _ in range(chunk)],
    }  # fmt: skip
    return [{"case": case, **timed(fn, chunk, repeat)} for case, fn in cases.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer volumes and repeats")
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy's BLAS too: spare threads would spin on the same core
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    base, repeat = (10, 2) if args.quick else (40, 5)
    rows = []
    for shape in SIZES:
        chunk = max(4, base * 64 * 64 * 48 // int(np.prod(shape)))  # about the same voxels per run at every size
        rows += size_rows(shape, chunk, repeat)
    load = os.getloadavg()[0]
    write_results(
        "synth_volumes",
        rows,
        notes=f"one core, one thread; per_s = volumes (or fields) per wall second, best of {repeat} runs of about "
        f"{base * 64 * 64 * 48:,} voxels; "
        "per_cpu_s = the same per second of this process's CPU time; "
        f"1-min load average during the run {load:.1f} on {os.cpu_count()} cores",
    )


if __name__ == "__main__":
    main()
