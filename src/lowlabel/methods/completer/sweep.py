"""The paper's protocol on a data file: one run per (missing rate, mask seed 1..N), mean ± std of ACC/NMI/ARI."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lowlabel.engine.demo import mean_over_seeds
from lowlabel.engine.runtime import Runtime
from lowlabel.files import write_json
from lowlabel.methods.completer.data import load_mat
from lowlabel.methods.completer.plots import plot_latents, plot_sweep
from lowlabel.methods.completer.recipe import Config, run_once

METRICS = ("acc", "nmi", "ari")


def summarise(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and population std (ddof 0, as the official report; 0 for a single run) of each metric over runs."""
    row = mean_over_seeds({"runs": [{m: r[m] for m in METRICS} for r in runs]})["runs"]
    return {key: row.get(key, 0.0) for m in METRICS for key in (m, f"{m}_std")}


def cluster_file(
    path: Path,
    *,
    rates: Sequence[float],
    seeds: int,
    cfg: Config,
    run_dir: Path,
    runtime: Runtime,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run COMPLETER (`cfg`, official defaults unless changed) on the .mat at `path` for every missing rate and
    mask seeds 1..`seeds`. Writes run_dir/results.json after each run (per-seed scores, history at every
    evaluation, seconds), one sub-folder per run (rate<r>_seed<s>: config.yaml, metrics.jsonl, checkpoints),
    latents_tsne.png for the first run, and sweep.png when several rates are given. Returns the summary."""
    dataset = load_mat(path, layout=cfg.data.layout or None)
    per_rate: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"file": str(path), "layout": dataset.name, "epochs": cfg.train.epochs,
                               "max_steps": cfg.train.max_steps, "rates": per_rate}
    for rate in rates:
        runs: list[dict[str, Any]] = []
        for seed in range(1, seeds + 1):
            t0 = time.perf_counter()
            run_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, missing_rate=rate, mask_seed=seed))
            result = run_once(run_cfg, dataset, runtime=runtime, run_dir=run_dir / f"rate{rate:g}_seed{seed}")
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
