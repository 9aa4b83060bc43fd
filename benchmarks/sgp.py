"""SGP hot paths: the 3D teacher's throughput (pairs/s), the FCGF student's training step, 3D feature matching
(each source descriptor's nearest target descriptor) with scipy's cKDTree against faiss (exact, IndexFlatL2), and in
2D the essential-matrix teacher's throughput and the CAPS student's training step.

    python benchmarks/sgp.py [--quick] [--threads N] [--part all|3d|2d]

Teacher = one pseudo-label as a teaching round makes it: FPFH (bootstrap: voxel 5 cm, normals, FPFH, mutual matching)
or the narrow student's descriptors (plain nearest neighbours), then RANSAC (10,000 iterations at most, 0.9999
confidence) + ICP, on geometry-world pairs of 4,096 and 16,384 points. Student step = forward + hardest-contrastive
loss + backward + SGD step on one batch of geometry-world pairs (rotation augmentation, positives within 10 cm),
for the narrow FCGF of the demo and the official width (8.8 M parameters). Matching = 32-d unit descriptors, N
source against N target (10^4 and 10^5; --quick: 10^4 only); both are exact, so they must agree (ties aside).
2D teacher = one pseudo-label from an image pair: SIFT on both views (OpenCV) + ratio test + 5-point RANSAC +
recoverPose, on geometry-world pairs at the demo's 160 x 208 (and 480 x 640 in full mode). 2D student step = forward
+ CAPS loss + backward + Adam step on the demo's batch (2 pairs, 500 query points) for the demo's students (random
ResNet-18 of width 16, ImageNet MobileNetV2) and, in full mode, the official width (ResNet-50, 128-d maps).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure, write_results
from lowlabel.data.synth.geometry import image_pair
from lowlabel.engine.recipe import build_optimizer
from lowlabel.methods.sgp import demo2d, recipe, teacher, two_view
from lowlabel.methods.sgp.geometry import match_features

NARROW = recipe.StudentConfig(channels=[16, 32, 64, 64], tr_channels=[32, 32, 32, 64], out_channels=16)


def teacher_rows(quick: bool) -> list[dict]:
    rows = []
    for n_points in [4096] if quick else [4096, 16384]:
        cfg = recipe.Config(student=NARROW, world=recipe.WorldConfig(n_train=3 if quick else 6, n_points=n_points))
        pairs = recipe.world_pairs(cfg.world, "train")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = recipe.build_model(cfg).eval()
        for name, net in (("FPFH (bootstrap)", None), ("narrow student", model)):
            t0 = time.perf_counter()
            stats = measure(lambda net=net, pairs=pairs, cfg=cfg: recipe.teach(pairs, net, cfg, "centroid"), repeat=1)
            rows.append({"job": f"teacher, {name}", "size": f"{n_points} points", "pairs": len(pairs),
                         "pairs_per_s": len(pairs) / stats["seconds_best"], "seconds_best": stats["seconds_best"],
                         "peak_mib": stats["peak_mib"]})
            print(rows[-1], f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return rows


def student_rows(quick: bool) -> list[dict]:
    rows = []
    cases = [("narrow (demo)", NARROW, 2, 2048), ("narrow (demo)", NARROW, 8, 4096)]
    if not quick:
        cases.append(("official width", recipe.StudentConfig(), 1, 4096))
    for name, student, batch, n_points in cases:
        cfg = recipe.Config(student=student, batch_pairs=batch, world=recipe.WorldConfig(n_train=batch,
                                                                                         n_points=n_points))
        items = [(p.source, p.target, p.T_gt) for p in recipe.world_pairs(cfg.world, "train")]
        data = recipe.make_batch(items, cfg, np.random.default_rng(0))
        model = recipe.build_model(cfg)
        opt = build_optimizer(model.parameters(), cfg.optim)
        step_fn = recipe.make_step_fn(cfg)

        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt, step_fn=step_fn,
                 data: tuple = data) -> None:
            loss = sum(step_fn(model, data, 0).values())
            opt.zero_grad()
            loss.backward()
            opt.step()

        stats = measure(step, repeat=2 if quick else 3, warmup=1)
        params = sum(p.numel() for p in model.parameters())
        rows.append({"job": f"student step, {name}", "size": f"{batch} pairs of {n_points} points "
                     f"({len(data[0])} voxels)", "params": params, "seconds_best": stats["seconds_best"],
                     "seconds_mean": stats["seconds_mean"], "peak_mib": stats["peak_mib"]})
        print(rows[-1], flush=True)
    return rows


def teacher2d_rows(quick: bool) -> list[dict]:
    rows = []
    for height, width in [(160, 208)] if quick else [(160, 208), (480, 640)]:
        cfg = demo2d.demo_config(quick=False, seed=0)
        world = dataclasses.replace(cfg.world, height=height, width=width).image_config()
        views = [image_pair(np.random.default_rng([0, k]), world) for k in range(4 if quick else 8)]

        def job(views: list = views, cfg: two_view.Config2D = cfg) -> None:
            for v in views:
                (kp1, d1), (kp2, d2) = teacher.sift(v.img1, cfg.num_kpts), teacher.sift(v.img2, cfg.num_kpts)
                teacher.two_view_teacher(kp1, kp2, d1, d2, v.K, v.K, ratio=cfg.ratio, threshold=cfg.threshold)

        stats = measure(job, repeat=2, warmup=1)
        rows.append({"job": "2D teacher, SIFT + ratio test + 5-point RANSAC", "size": f"{height} x {width}",
                     "pairs": len(views), "pairs_per_s": len(views) / stats["seconds_best"],
                     "seconds_best": stats["seconds_best"], "peak_mib": stats["peak_mib"]})
        print(rows[-1], flush=True)
    return rows


def student2d_rows(quick: bool) -> list[dict]:
    rows = []
    students = dict(demo2d.STUDENTS)
    if not quick:
        students["official width"] = two_view.CAPSConfig()
    for name, student in students.items():
        cfg = dataclasses.replace(demo2d.demo_config(quick=False, seed=0), student=student)
        cfg = dataclasses.replace(cfg, world=dataclasses.replace(cfg.world, n_train=cfg.batch_pairs))
        pairs = two_view.world_view_pairs(cfg, "train")
        batch = next(iter(two_view.ViewBatches([(p, np.eye(3)) for p in pairs], cfg, seed=0).epoch(0)))
        model = two_view.build_student(cfg)
        opt = build_optimizer(model.parameters(), cfg.optim)

        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt, batch: tuple = batch) -> None:
            loss = sum(two_view.caps_step(model, batch, 0).values())
            opt.zero_grad()
            loss.backward()
            opt.step()

        stats = measure(step, repeat=3, warmup=1)
        h, w = cfg.world.height, cfg.world.width
        rows.append({"job": f"2D student step, CAPS {name} ({student.backbone})",
                     "size": f"{cfg.batch_pairs} pairs of {h} x {w}, {cfg.num_queries} queries",
                     "params": sum(p.numel() for p in model.parameters()), "seconds_best": stats["seconds_best"],
                     "seconds_mean": stats["seconds_mean"], "peak_mib": stats["peak_mib"]})
        print(rows[-1], flush=True)
    return rows


def faiss_match(f_src: np.ndarray, f_dst: np.ndarray) -> np.ndarray:
    """Each source row's nearest target row by exact L2 (faiss IndexFlatL2) -> (N, 2) rows (i, j)."""
    import faiss

    index = faiss.IndexFlatL2(f_dst.shape[1])
    index.add(np.ascontiguousarray(f_dst, dtype=np.float32))
    _, j = index.search(np.ascontiguousarray(f_src, dtype=np.float32), 1)
    return np.stack([np.arange(len(f_src)), j[:, 0]], 1)


def matching_rows(quick: bool) -> list[dict]:
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    rows = []
    for n in [10_000] if quick else [10_000, 100_000]:
        rng = np.random.default_rng(n)
        f_src = rng.standard_normal((n, 32)).astype(np.float32)
        f_src /= np.linalg.norm(f_src, axis=1, keepdims=True)
        f_dst = f_src[rng.permutation(n)] + 0.05 * rng.standard_normal((n, 32)).astype(np.float32)
        f_dst /= np.linalg.norm(f_dst, axis=1, keepdims=True)
        results = {}
        for name, fn in (("cKDTree (match_features)", match_features), ("faiss IndexFlatL2", faiss_match)):
            def job(fn=fn, name=name, a=f_src, b=f_dst, results=results) -> None:
                results[name] = fn(a, b)

            stats = measure(job, repeat=1 if n > 10_000 else 3)
            rows.append({"job": f"3D matching, {name}", "size": f"{n} x {n}, 32-d", "seconds_best":
                         stats["seconds_best"], "peak_mib": stats["peak_mib"]})
            print(rows[-1], flush=True)
        a, b = results.values()
        rows[-1]["agreement"] = float((a[:, 1] == b[:, 1]).mean())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--part", choices=["all", "3d", "2d"], default="all",
                        help="3d -> results/sgp.json, 2d -> results/sgp_2d.json, all -> both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    notes = (f"{args.threads} torch thread(s){', quick' if args.quick else ''}; the machine is shared with other jobs "
             "(times are upper bounds)")
    if args.part in ("all", "3d"):
        write_results("sgp", matching_rows(args.quick) + teacher_rows(args.quick) + student_rows(args.quick), notes)
    if args.part in ("all", "2d"):
        write_results("sgp_2d", teacher2d_rows(args.quick) + student2d_rows(args.quick), notes)


if __name__ == "__main__":
    main()
