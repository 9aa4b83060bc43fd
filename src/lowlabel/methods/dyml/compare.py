"""CSL against the baselines on one data set over several seeds (`lowlabel dyml compare`; the Omniglot numbers of
docs/methods/dyml.md come from it)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowlabel.engine.demo import mean_over_seeds


def scores(test: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"fine_map": ..., "overall_asi": ...} from `recipe.evaluate_model`'s nested result."""
    return {f"{level}_{key}": value for level, values in test.items() for key, value in values.items()}


def compare_losses(*, data: Path | None, seeds: Sequence[int], losses: Sequence[str], out: Path,
                   config: Path | None = None, overrides: Sequence[str] = (), device: str = "auto") -> dict[str, Any]:
    """Train every model of `losses` (`recipe.with_loss` specs: "csl", "level_sum:multi_similarity", ...) for every
    seed (train.seed and loss.proxy_seed = seed) with the config from defaults < `config` < `overrides`; returns
    {"mean": {spec: metrics ± std}, "per_seed": {spec: [metrics]}, "seconds": {spec: [training seconds]}, "seeds",
    "config"} and writes run folders under out/<spec with ':' as '_'>/seed<seed>."""
    from lowlabel.engine import config as cfg_mod
    from lowlabel.engine import runtime as rt
    from lowlabel.methods.dyml import recipe

    base = cfg_mod.load_config(recipe.Config, config, list(overrides))
    runtime = rt.init(device, seed=base.train.seed)
    per_seed: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, list[float]] = {}
    for seed in seeds:
        for loss in losses:
            cfg = recipe.with_loss(base, loss)
            cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, proxy_seed=seed),
                                      train=dataclasses.replace(base.train, seed=seed))
            t0 = time.perf_counter()
            run_dir = Path(out) / loss.replace(":", "_") / f"seed{seed}"
            _, resolved, summary = recipe.train_model(cfg, data=data, run_dir=run_dir,
                                                      runtime=runtime, resume=False)
            seconds.setdefault(loss, []).append(time.perf_counter() - t0)
            per_seed.setdefault(loss, []).append(scores(summary["test"]))
    return {"mean": mean_over_seeds(per_seed), "per_seed": per_seed, "seconds": seconds, "seeds": list(seeds),
            "data": str(data) if data is not None else None, "config": cfg_mod.to_yaml(resolved)}
