"""The paper's protocol on a data file: one run per (missing rate, mask seed 1..N), mean ± std of ACC/NMI/ARI."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lowlabel.engine.runtime import Runtime
from lowlabel.engine.trainer import write_json
from lowlabel.methods.completer.data import load_mat
from lowlabel.methods.completer.plots import plot_latents, plot_sweep
from lowlabel.methods.completer.recipe import Config, make_mask, run_once

METRICS = ("acc", "nmi", "ari")


def summarise(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and population std (ddof 0, as the official report) of each metric over runs."""
    out: dict[str, float] = {}
    for m in METRICS:
        values = np.array([r[m] for r in runs], dtype=np.float64)
        out[m], out[f"{m}_std"] = float(values.mean()), float(values.std())
    return out


def cluster_file(
    path: Path,
    *,
    rates: Sequence[float],
    seeds: int,
    epochs: int,
    run_dir: Path,
    runtime: Runtime,
    layout: str | None = None,
    cfg: Config | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run COMPLETER on the .mat at `path` for every missing rate and mask seeds 1..`seeds` (official defaults
    otherwise). Writes run_dir/results.json after each run (per-seed scores, history every 100 epochs, seconds),
    latents_tsne.png for the first run, and sweep.png when several rates are given. Returns the summary."""
    cfg = dataclasses.replace(cfg or Config(), epochs=epochs)
    cfg.layout = layout or cfg.layout
    dataset = load_mat(path, layout=cfg.layout or None)
    per_rate: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"file": str(path), "layout": dataset.name, "epochs": epochs, "rates": per_rate}
    for rate in rates:
        runs: list[dict[str, Any]] = []
        for seed in range(1, seeds + 1):
            t0 = time.perf_counter()
            mask = make_mask(dataset.labels.size, len(dataset.views), rate, seed)
            result = run_once(cfg, dataset, mask, runtime=runtime, run_dir=run_dir / f"rate{rate:g}_seed{seed}")
            runs.append({"mask_seed": seed, **result["scores"], "seconds": time.perf_counter() - t0,
                         "n_complete": result["n_complete"], "history": result["history"]})
            log(f"rate {rate:g} seed {seed}: " + " ".join(f"{m}={100 * result['scores'][m]:.2f}" for m in METRICS)
                + f" ({runs[-1]['seconds']:.0f} s)")
            if runtime.is_main and rate == rates[0] and seed == 1:
                plot_latents(result["embedding"], result["assignments"], run_dir / "latents_tsne.png",
                             title=f"COMPLETER on {path.name}, missing rate {rate:g}, seed 1")
            if runtime.is_main:
                write_json(run_dir / "results.json", {**summary, "running": {"missing_rate": rate, "runs": runs}})
        per_rate.append({"missing_rate": rate, **summarise(runs), "runs": runs})
    if runtime.is_main:
        write_json(run_dir / "results.json", summary)
        if len(rates) > 1:
            curves = {m: [(r[m], r[f"{m}_std"]) for r in per_rate] for m in METRICS}
            plot_sweep(list(rates), curves, run_dir / "sweep.png", title=f"COMPLETER on {path.name}")
    return summary
