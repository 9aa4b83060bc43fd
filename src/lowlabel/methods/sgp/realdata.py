"""SGP on the four real 3DMatch pairs of ../shared/data/3dmatch_pairs: the FPFH teacher, the geometry-world students
and students trained self-supervised on the real fragments themselves, with the official errors and recall.

    python -m lowlabel.methods.sgp.realdata [--root DIR] [--world-runs DIR [--append]] [--steps N] [--out FILE]

writes benchmarks/results/sgp_3dmatch.json. --world-runs is a demo folder (`demo.run(quick=False, out=DIR)`) whose
sgp/seed<s> runs give the geometry-world students (the last round of each seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine import runtime as rt
from lowlabel.engine.recipe import load_model
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json
from lowlabel.methods.sgp import demo, recipe

SEEDS = [0, 1, 2]
WORLD = "SGP student trained on the geometry world (last round)"
ROOT = Path(__file__).resolve().parents[4] / ".." / "shared" / "data" / "3dmatch_pairs"
OUT = Path(__file__).resolve().parents[4] / "benchmarks" / "results" / "sgp_3dmatch.json"


def four_pairs(root: Path) -> list[recipe.Pair]:
    """The three scene pairs (cloud_bin_<i> with .info.txt poses) and the GeoTransformer demo pair (src -> ref, gt)."""
    pairs = recipe.fragment_pairs(root)
    demo_dir = root / "geotransformer_demo"
    if demo_dir.is_dir():
        load = [np.load(demo_dir / f"{k}.npy").astype(np.float64) for k in ("src", "ref", "gt")]
        pairs.append(recipe.Pair("geotransformer_demo", 0, 1, load[0], load[1], load[2]))
    return pairs


def _rows(pairs: list[recipe.Pair], model: torch.nn.Module | None, cfg: recipe.Config, seed: int) -> list[dict]:
    t0 = time.perf_counter()
    rows = recipe.registration_rows(pairs, recipe.teach(pairs, model, cfg, "origin", seed=seed))
    seconds = (time.perf_counter() - t0) / len(pairs)
    return [{**r, "seed": seed, "seconds_per_pair": seconds} for r in rows]


def real_config(seed: int, steps: int) -> recipe.Config:
    """The narrow student of the demo on the real fragments: every pair in one batch, rounds bs and 00, `steps`
    steps each, rotation augmentation up to 30 degrees, FPFH normals towards the sensor (origin)."""
    base = demo.demo_config(False, seed)
    cfg = dataclasses.replace(base, batch_pairs=3, meta_iters=1, orient="origin")
    return recipe.with_steps(cfg, steps)


def world_rows(pairs: list[recipe.Pair], world_runs: Path) -> list[dict]:
    """The last-round student of each demo seed (world_runs/sgp/seed<s>) registering the real pairs."""
    rows = []
    for s in SEEDS:
        run_dir = world_runs / "sgp" / f"seed{s}" / "rounds"
        if not run_dir.is_dir():
            raise LowlabelError(f"--world-runs: {run_dir} not found; run the full demo into that folder first")
        last = sorted(d for d in run_dir.iterdir() if d.is_dir())[-1]
        model = load_model(recipe.build_model, demo.demo_config(False, s), ckpt.newest_checkpoint(last))
        rows += _rows(pairs, model, demo.demo_config(False, s), s)
    return rows


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Recall per model over pairs x seeds, and per pair (share of seeds that register it)."""
    result["recall"] = {name: float(np.mean([r["success"] for r in rows])) for name, rows in result["models"].items()}
    result["per_pair"] = {name: {pair: float(np.mean([r["success"] for r in rows if f"{r['scene']} {r['i']}->{r['j']}"
                                                       == pair])) for pair in result["pairs"]}
                          for name, rows in result["models"].items()}
    return result


def run(root: Path, out: Path, *, world_runs: Path | None, steps: int, work: Path,
        append: bool = False) -> dict[str, Any]:
    """FPFH teacher and self-supervised students on the real pairs (3 seeds), plus the geometry-world students when
    `world_runs` is given; with `append`, only the world students are added to the existing `out`."""
    pairs = four_pairs(root)
    cfg0 = demo.demo_config(False)
    if append:
        if world_runs is None or not out.is_file():
            raise LowlabelError("--append needs --world-runs and an existing --out file")
        result = json.loads(out.read_text())
        result["models"][WORLD] = world_rows(pairs, world_runs)
        write_json(out, summarise(result))
        return result
    runtime = rt.init("cpu")
    result: dict[str, Any] = {"pairs": [f"{p.scene} {p.i}->{p.j}" for p in pairs], "seeds": SEEDS, "models": {}}
    result["models"]["FPFH teacher (RANSAC + ICP)"] = [r for s in SEEDS for r in _rows(pairs, None, cfg0, s)]
    if world_runs is not None:
        result["models"][WORLD] = world_rows(pairs, world_runs)
    self_rows: dict[str, list[dict]] = {}
    for s in SEEDS:
        cfg = real_config(s, steps)
        t0 = time.perf_counter()
        _, summary = recipe.train_model(cfg, data=root, run_dir=work / f"seed{s}", runtime=runtime, resume=False,
                                        test_pairs=pairs)
        for r in summary["rounds"]:
            self_rows.setdefault(r["round"], []).extend({**row, "seed": s} for row in r["test_rows"])
        result.setdefault("self_supervised_rounds", []).append(
            {"seed": s, "seconds": time.perf_counter() - t0,
             "rounds": [{k: v for k, v in r.items() if k != "test_rows"} for r in summary["rounds"]]})
    for name, rows in self_rows.items():
        result["models"][f"SGP student self-supervised on the real fragments, round {name}"] = rows
    result["budget"] = {"steps_per_round": steps, "pairs_per_step": 3, "threads": torch.get_num_threads(),
                        "student": dataclasses.asdict(cfg0.student), "voxel_size": cfg0.voxel_size,
                        "ransac_iter": cfg0.ransac_iter, "augment_angle": cfg0.augment_angle}
    write_json(out, summarise(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--world-runs", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("runs/sgp_3dmatch"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--append", action="store_true", help="only add the --world-runs students to --out")
    args = parser.parse_args()
    if not args.root.is_dir():
        raise LowlabelError(f"--root {args.root}: folder not found")
    torch.set_num_threads(args.threads)
    result = run(args.root, args.out, world_runs=args.world_runs, steps=args.steps, work=args.work,
                 append=args.append)
    print(json.dumps(result["recall"], indent=1))


if __name__ == "__main__":
    main()
