"""SGP demo on the geometry world (3D): FPFH + RANSAC (the hand-crafted start), the SGP student after each
teacher-student round (bs, 00, 01), and the same student trained on ground-truth poses (the oracle); test
registration recall (rotation < 15 degrees and translation < 0.3) per round, over paired seeds.

This 3D demo is the registry's (`lowlabel demo sgp`): it fits a few CPU minutes. The 2D demo (SIFT start, CAPS
student) is `demo2d`, about an hour of CPU. See docs/methods/sgp.md for the tuning worlds and the choices made on them.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowlabel.engine.demo import DemoResult, mean_over_seeds
from lowlabel.engine.runtime import Runtime
from lowlabel.files import write_json
from lowlabel.methods.sgp import recipe
from lowlabel.report.figures import figure, save_figure

FPFH = "FPFH + RANSAC (hand-crafted start)"
ORACLE = "student on ground-truth poses"
EVAL_SEEDS = [0, 1, 2]  # evaluation worlds; the tuning world is seed 1000 (docs/methods/sgp.md)
ROUND_LABEL = {"bs": "round 1 (bs)", "00": "round 2 (00)", "01": "round 3 (01)"}


def student_name(round_name: str) -> str:
    return f"SGP student, {ROUND_LABEL.get(round_name, round_name)}"


def demo_config(quick: bool, seed: int = 0) -> recipe.Config:
    """The demo's world and budget, chosen on the tuning world (seed 1000, docs/methods/sgp.md): 2,048-point clouds
    with relative rotations up to 30 degrees (at 180 degrees the narrow student trained on true poses reached 0.17
    recall after 200 steps, against 0.875 at 30 degrees), a narrow FCGF (16/32/64/64, decoder 32/32/32/64, 16-d),
    2 pairs per step, rotation augmentation up to 30 degrees, 5,000 RANSAC iterations; full: 40 training and 24 test
    pairs, 150 steps per round, rounds bs, 00, 01; quick: 12 and 8 pairs, 30 steps, rounds bs, 00."""
    world = recipe.WorldConfig(n_train=12 if quick else 40, n_test=8 if quick else 24, seed=seed, n_points=2048,
                               max_angle=30.0)
    student = recipe.StudentConfig(channels=[16, 32, 64, 64], tr_channels=[32, 32, 32, 64], out_channels=16)
    cfg = recipe.Config(batch_pairs=2, augment_angle=30.0, meta_iters=1 if quick else 2, ransac_iter=5000,
                        world=world, student=student)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, checkpoint_every=10**9,
                                                             log_every=50))
    return recipe.with_steps(cfg, 30 if quick else 150)


def _one_seed(quick: bool, seed: int, out: Path, runtime: Runtime,
              threads: int = 0) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """FPFH start, the SGP rounds and the oracle on the world of `seed`: ({model: metrics}, per-round record)."""
    if threads:
        torch.set_num_threads(threads)
    cfg = demo_config(quick, seed)
    test = recipe.load_pairs(cfg, None, "test")
    fpfh_rows = recipe.registration_rows(test, recipe.teach(test, None, cfg, "centroid", seed=10**6))
    scores = {FPFH: {"recall": recipe.recall(fpfh_rows)}}
    _, sgp = recipe.train_model(cfg, data=None, run_dir=out / "sgp" / f"seed{seed}", runtime=runtime, resume=False,
                                test_pairs=test)
    for r in sgp["rounds"]:
        scores[student_name(r["round"])] = {"recall": r["test_recall"], "label_precision": r["label_precision"],
                                            "verified": r["verified"]}
    oracle_cfg = dataclasses.replace(cfg, supervised=True)
    _, oracle = recipe.train_model(oracle_cfg, data=None, run_dir=out / "oracle" / f"seed{seed}", runtime=runtime,
                                   resume=False, test_pairs=test)
    scores[ORACLE] = {"recall": oracle["final_test_recall"]}
    record = {"seed": seed, "fpfh": scores[FPFH]["recall"], "oracle": oracle["final_test_recall"],
              "rounds": [{k: v for k, v in r.items() if k != "test_rows"} for r in sgp["rounds"]]}
    return scores, record


def run_seeds(one_seed: Callable[..., tuple[dict[str, dict[str, float]], dict[str, Any]]], quick: bool,
              seeds: Sequence[int], out: Path, runtime: Runtime,
              jobs: int) -> tuple[dict[str, list[dict[str, float]]], list[dict[str, Any]]]:
    """`one_seed(quick, seed, out, runtime[, threads])` -> (scores per model, per-round record) for every seed, in
    `jobs` spawned processes of one torch thread each when jobs > 1 (the same numbers as one process); returns the
    scores gathered per model (seed order) and the records."""
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(one_seed, [quick] * len(seeds), seeds, [out] * len(seeds),
                                    [runtime] * len(seeds), [1] * len(seeds)))
    else:
        results = [one_seed(quick, seed, out, runtime) for seed in seeds]
    runs: dict[str, list[dict[str, float]]] = {}
    for scores, _ in results:
        for name, row in scores.items():
            runs.setdefault(name, []).append(row)
    return runs, [record for _, record in results]


def run(*, quick: bool, out: Path, runtime: Runtime, jobs: int = 1) -> DemoResult:
    """FPFH start, SGP rounds and the ground-truth oracle on 1 (quick) or 3 paired worlds (the seed sets the world,
    the initialisation, the batches and RANSAC); the headline compares the last SGP round with the FPFH start.
    `jobs` > 1 runs the seeds in that many processes (one torch thread each; same numbers as jobs=1)."""
    t0 = time.perf_counter()
    out = Path(out)
    seeds = EVAL_SEEDS[:1] if quick else EVAL_SEEDS
    runs, per_round = run_seeds(_one_seed, quick, seeds, out, runtime, jobs)
    cfg = demo_config(quick)
    rows = mean_over_seeds(runs)
    write_json(out / "rows.json", {"mean": rows, "per_seed": runs, "per_round": per_round, "seeds": seeds})
    figures(out)
    last = student_name(per_round[0]["rounds"][-1]["round"])
    first, second = student_name("bs"), student_name("00")
    wins = sum(s["recall"] > f["recall"] for s, f in zip(runs[last], runs[FPFH], strict=True))
    r2 = sum(b["recall"] > a["recall"] for a, b in zip(runs[first], runs[second], strict=True))
    per_seed = "; ".join(f"{name}: " + ", ".join(f"{r['recall']:.3f}" for r in rs) for name, rs in runs.items())
    return DemoResult(
        slug="sgp", metric="recall", method=last, baseline=FPFH, rows=rows,
        notes=[f"{len(seeds)} seed(s) {seeds}; {cfg.world.n_train} training / {cfg.world.n_test} test pairs of "
               f"{cfg.world.n_points}-point clouds (relative rotation <= {cfg.world.max_angle:g} degrees); "
               f"{cfg.train.max_steps} steps per round, {cfg.batch_pairs} pairs per step; narrow FCGF "
               f"{cfg.student.channels}/{cfg.student.tr_channels}, {cfg.student.out_channels}-d",
               f"per-seed recall: {per_seed}",
               f"{last} beats FPFH on {wins} of {len(seeds)} seed(s); round 2 beats round 1 on {r2} of {len(seeds)}"],
        seconds=time.perf_counter() - t0)


def figures(run_dir: Path) -> list[Path]:
    """sgp_recall_per_round.png from the demo's rows.json (recall per round, mean and per seed, with the FPFH
    start and the oracle as lines); a training run folder (summary.json with rounds) gets the same plot of its
    own rounds."""
    run_dir = Path(run_dir)
    rows_file, summary = run_dir / "rows.json", run_dir / "summary.json"
    if rows_file.is_file():
        per_round = json.loads(rows_file.read_text())["per_round"]
    elif summary.is_file() and "rounds" in (s := json.loads(summary.read_text())):
        per_round = [{"seed": "run", "rounds": s["rounds"]}]
    else:
        return sorted(run_dir.glob("*.png"))
    return [plot_rounds(per_round, run_dir / "sgp_recall_per_round.png", lines={"fpfh": FPFH, "oracle": ORACLE},
                        ylabel="test registration recall (15°, 0.3)",
                        title=f"SGP on the geometry world ({len(per_round)} seed(s))")]


def plot_rounds(per_round: list[dict[str, Any]], out: Path, *, lines: dict[str, str], ylabel: str,
                title: str) -> Path:
    """Test recall per round (each record's rounds[k]["test_recall"]), per seed and the mean over seeds, with a
    dashed line per `lines` key (record key -> legend label: the hand-crafted start, the oracle) at its mean."""
    fig, ax = figure(figsize=(6.4, 4.2))
    names = [r["round"] for r in per_round[0]["rounds"]]
    x = np.arange(1, len(names) + 1)
    curves = np.array([[r["test_recall"] for r in s["rounds"]] for s in per_round])
    for c in curves:
        ax.plot(x, c, color="tab:blue", alpha=0.3, marker=".", lw=1)
    ax.plot(x, curves.mean(0), color="tab:blue", marker="o", lw=2, label="SGP student (mean over seeds)")
    for (key, label), colour in zip(lines.items(), ("tab:red", "tab:green"), strict=False):
        if key in per_round[0]:
            ax.axhline(float(np.mean([s[key] for s in per_round])), color=colour, ls="--", label=label)
    ax.set_xticks(x, [ROUND_LABEL.get(n, n) for n in names])
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, out)


def main() -> None:
    """`python -m lowlabel.methods.sgp.demo [--quick] [--jobs 3] [--out DIR]`: run the demo and copy its rows.json
    (with the DemoResult notes) to benchmarks/results/sgp_demo_{quick,full}.json; --from-rows DIR only copies the
    rows.json of a finished demo folder."""
    import argparse

    from lowlabel.engine import runtime as rt

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/sgp_demo"))
    parser.add_argument("--from-rows", type=Path, default=None)
    args = parser.parse_args()
    results = Path(__file__).resolve().parents[4] / "benchmarks" / "results"
    results = results / f"sgp_demo_{'quick' if args.quick else 'full'}.json"
    extra: dict[str, Any] = {}
    folder = args.from_rows
    if folder is None:
        torch.set_num_threads(args.threads)
        result = run(quick=args.quick, out=args.out, runtime=rt.init("cpu"), jobs=args.jobs)
        extra = {"notes": result.notes, "seconds": result.seconds, "wins": result.wins, "method": result.method,
                 "baseline": result.baseline}
        folder = args.out
    write_json(results, {**json.loads((folder / "rows.json").read_text()), **extra})
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
