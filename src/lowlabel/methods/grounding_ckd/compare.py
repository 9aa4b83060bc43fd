"""Paired-seed comparison on a prepared folder (train.npz + val.npz): CKD (NCE + distillation) against NCE alone,
same config, initialisation and batches per seed, with the detector-alone, random and upper-bound references."""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

from lowlabel.engine.demo import mean_over_seeds
from lowlabel.engine.runtime import Runtime
from lowlabel.methods.grounding_ckd import recipe

METHOD, ABLATION = "NCE + distillation (CKD)", "NCE alone"


def compare(cfg: recipe.Config, data: Path, seeds: list[int], out: Path, runtime: Runtime) -> dict:
    """Train both rows for every seed (train.seed = seed) on `data`; returns {"mean", "per_seed", "wins", ...}."""
    sets = recipe.load_data(cfg, data)
    refs = recipe.references(sets[1], recipe.phrase_arrays(cfg, sets[1]))
    runs: dict[str, list[dict[str, float]]] = {}
    t0 = time.perf_counter()
    for seed in seeds:
        base = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
        for name, variant in ((METHOD, base), (ABLATION, dataclasses.replace(base, distill=False))):
            run_dir = Path(out) / ("ckd" if variant.distill else "nce") / f"seed{seed}"
            _, summary = recipe.train_model(variant, data=data, run_dir=run_dir, runtime=runtime, resume=False,
                                            sets=sets)
            runs.setdefault(name, []).append({k: v for k, v in summary["test"].items() if k.startswith("R@")})
    wins = sum(a["R@1"] > b["R@1"] for a, b in zip(runs[METHOD], runs[ABLATION], strict=True))
    gains = [a["R@1"] - b["R@1"] for a, b in zip(runs[METHOD], runs[ABLATION], strict=True)]
    return {"mean": mean_over_seeds(runs), "per_seed": runs, "seeds": seeds, "wins": wins,
            "mean_gain_R@1": statistics.fmean(gains), "references": refs,
            "phrases": int(recipe.evaluate_phrases(sets[1], cfg)), "images": len(sets[1].image_names),
            "train_sentences": len(sets[0].sentences), "seconds": time.perf_counter() - t0,
            "config": dataclasses.asdict(cfg)}
