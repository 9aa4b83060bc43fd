"""Shared helpers for benchmark scripts: timing, peak memory, and the JSON result files.

Every script `benchmarks/<name>.py` runs standalone (`python benchmarks/<name>.py [--quick]`), prints a table and writes
`benchmarks/results/<name>.json` through `write_results`; `benchmarks/render.py` turns those files into RESULTS.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lowlabel.files import write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# As the `lowlabel` command does (cli.run): PyTorch's allocator backs large CPU tensors with huge pages. It reads
# the variable at its first allocation, which comes after this import in every script.
# THP_MEM_ALLOC_ENABLE=0 python benchmarks/NAME.py measures without them.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc malloc_trim), so that memory freed by an earlier measurement does not
    hide the next one's growth: the peak is measured as resident-set growth above the baseline."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak() -> int:
    """Reset the process's peak resident set (Linux clear_refs) and return the current RSS in bytes."""
    gc.collect()
    _release_free_heap()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        pass
    return _status_kib("VmRSS:") * 1024


def peak_since(baseline: int) -> int:
    """Peak RSS growth in bytes since `reset_peak` returned `baseline` (CPU), or CUDA peak allocation if on GPU."""
    return max(0, _status_kib("VmHWM:") * 1024 - baseline)


def measure(fn: Callable[[], Any], repeat: int = 1, warmup: int = 0) -> dict[str, float]:
    """Run `fn` `warmup` times untimed, then `repeat` times; best and mean seconds and peak RSS growth in MiB."""
    for _ in range(warmup):
        fn()
    baseline = reset_peak()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {
        "seconds_best": min(times),
        "seconds_mean": sum(times) / len(times),
        "peak_mib": peak_since(baseline) / 2**20,
    }


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def demo_rows(result: Any, per_seed: dict[str, list[dict[str, Any]]], seeds: list[Any], label: str) -> list[dict]:
    """A demo's rows for its result file: each model's mean over seeds (`result.rows`), then its value per seed."""
    rows = [{label: name, "seed": "mean", **row} for name, row in result.rows.items()]
    return rows + [{label: name, "seed": seed, **metrics} for name, runs in per_seed.items()
                   for seed, metrics in zip(seeds, runs, strict=True)]


def write_results(name: str, rows: list[dict[str, Any]], notes: str = "") -> Path:
    """Write `benchmarks/results/<name>.json` and print the rows as a table."""
    payload = {"name": name, "date": time.strftime("%Y-%m-%d"), "machine": machine(), "rows": rows, "notes": notes}
    path = write_json(RESULTS_DIR / f"{name}.json", payload)
    if rows:
        keys = list(rows[0])
        print(" | ".join(keys))
        for row in rows:
            print(" | ".join(f"{row.get(k):.4g}" if isinstance(row.get(k), float) else str(row.get(k)) for k in keys))
    if notes:
        print(notes)
    return path
