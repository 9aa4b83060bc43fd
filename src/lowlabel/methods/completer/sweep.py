"""The paper's protocol on a data file: one run per (missing rate, mask seed 1..N), mean ± std of ACC/NMI/ARI.
A resumed sweep keeps the runs results.json records and continues the others from their newest checkpoints."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lowlabel.engine.demo import mean_over_seeds
from lowlabel.engine.runtime import Runtime
from lowlabel.files import read_json, write_json
from lowlabel.methods.completer.plots import plot_latents, plot_sweep
from lowlabel.methods.completer.recipe import Config, load_data, run_once

METRICS = ("acc", "nmi", "ari")


def summarise(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and population std (ddof 0, as the official report; 0 for a single run) of each metric over runs."""
    row = mean_over_seeds({"runs": [{m: r[m] for m in METRICS} for r in runs]})["runs"]
    return {key: row.get(key, 0.0) for m in METRICS for key in (m, f"{m}_std")}


def _finished_runs(results: Path) -> list[dict[str, Any]]:
    return list(read_json(results, "sweep results").get("runs", [])) if results.is_file() else []


def cluster_file(
    path: Path,
    *,
    cfg: Config,
    run_dir: Path,
    runtime: Runtime,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run COMPLETER (`cfg`, official defaults unless changed) on the .mat at `path` for every missing rate of
    `cfg.sweep.missing_rates` and mask seeds 1..`cfg.sweep.seeds`. One sub-folder per run (rate<r>_seed<s>:
    config.yaml, metrics.jsonl, checkpoints, assignments.csv); run_dir/results.json after each run (every finished
    run: scores when the file has labels, history, seconds; per rate: mean ± std); latents_tsne.png for the first
    run, and sweep.png when several rates are given and the file has labels. With `resume`, runs results.json
    already holds are kept and the others continue from their newest checkpoints. Returns the summary."""
    dataset = load_data(cfg, path)
    rates, seeds = list(cfg.sweep.missing_rates), cfg.sweep.seeds
    runs = _finished_runs(run_dir / "results.json") if resume else []
    done = {(r["missing_rate"], r["mask_seed"]) for r in runs}
    summary: dict[str, Any] = {"file": str(path), "layout": dataset.name, "epochs": cfg.train.epochs,
                               "max_steps": cfg.train.max_steps, "missing_rates": rates, "seeds": seeds,
                               "scored": dataset.labels is not None, "runs": runs, "rates": []}
    for rate in rates:
        for seed in range(1, seeds + 1):
            if (rate, seed) in done:
                continue
            t0 = time.perf_counter()
            run_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, missing_rate=rate, mask_seed=seed))
            result = run_once(run_cfg, dataset, runtime=runtime, run_dir=run_dir / f"rate{rate:g}_seed{seed}",
                              resume=resume)
            runs.append({"missing_rate": rate, "mask_seed": seed, **result.get("scores", {}),
                         "seconds": time.perf_counter() - t0, "n_complete": result["n_complete"],
                         "history": result["history"]})
            scores = " ".join(f"{m}={100 * result['scores'][m]:.2f}" for m in METRICS) if "scores" in result \
                else f"{len(set(result['assignments'].tolist()))} clusters"
            log(f"rate {rate:g} seed {seed}: {scores} ({runs[-1]['seconds']:.0f} s)")
            if runtime.is_main and rate == rates[0] and seed == 1:
                plot_latents(result["embedding"], result["assignments"], run_dir / "latents_tsne.png",
                             title=f"COMPLETER on {path.name}, missing rate {rate:g}, seed 1")
            if runtime.is_main:
                write_json(run_dir / "results.json", summary)
    if summary["scored"]:
        summary["rates"] = [{"missing_rate": rate, **summarise([r for r in runs if r["missing_rate"] == rate])}
                            for rate in rates]
    if runtime.is_main:
        write_json(run_dir / "results.json", summary)
        if len(rates) > 1 and summary["scored"]:
            curves = {m: [(r[m], r[f"{m}_std"]) for r in summary["rates"]] for m in METRICS}
            plot_sweep(rates, curves, run_dir / "sweep.png", title=f"COMPLETER on {path.name}")
    return summary
