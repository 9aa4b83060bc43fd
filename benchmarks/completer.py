"""COMPLETER hot paths: one training epoch and a whole (reduced or full) run on Scene-15 / LandUse-21 with the
official architecture and hyperparameters, and the contrastive loss vs the official broadcast formulation.

    python benchmarks/completer.py [--quick] [--threads N] [--epochs E] [--datasets A,B] [--whole-run A]

Per-epoch time: our loop (data on the device via TensorBatches, one Trainer) timed over measured epochs. Whole run:
`--epochs` epochs (default 500; --quick: 10) of fit_and_cluster including the final embedding and k-means, timed end
to end (never extrapolated). Plain loop: the official training procedure written as a bare PyTorch loop, timed
in the same process, so the ratio to ours does not depend on how busy the machine was. Official figures (2 threads,
quiet machine): 0.92 s/epoch and ~470 s/run on Scene-15, 0.44 s/epoch and ~220 s/run on LandUse-21.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure, write_results
from lowlabel.engine import runtime as rt
from lowlabel.methods.completer.data import LAYOUTS, load_mat, make_mask
from lowlabel.methods.completer.losses import EPS, cross_view_contrastive, dual_prediction, reconstruction
from lowlabel.methods.completer.model import Completer
from lowlabel.methods.completer.recipe import Config, DataConfig, EvalConfig, LossConfig, fit_and_cluster

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "completer"
OFFICIAL = {"Scene-15": (0.92, 470.0), "LandUse-21": (0.44, 220.0)}


def official_loss(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 9.0) -> torch.Tensor:
    """The official formulation: the (B, K, K) outer-product tensor summed over the batch, boolean-index clamps."""
    k = z1.shape[1]
    p = (z1.unsqueeze(2) * z2.unsqueeze(1)).sum(dim=0)
    p = (p + p.t()) / 2 / p.sum()
    p_i = p.sum(dim=1).view(k, 1).expand(k, k).clone()
    p_j = p.sum(dim=0).view(1, k).expand(k, k).clone()
    p[(p < EPS).data] = EPS
    p_j[(p_j < EPS).data] = EPS
    p_i[(p_i < EPS).data] = EPS
    return -(p * (torch.log(p) - (alpha + 1) * torch.log(p_j) - (alpha + 1) * torch.log(p_i))).sum()


def loss_rows(quick: bool) -> list[dict]:
    rows = []
    for k in (64, 128):
        for b in (256, 1024) if quick else (256, 1024, 4096):
            z1 = torch.softmax(torch.randn(b, k), 1).requires_grad_(True)
            z2 = torch.softmax(torch.randn(b, k), 1).requires_grad_(True)
            for name, fn in (("ours_matmul", cross_view_contrastive), ("official_broadcast", official_loss)):
                stats = measure(lambda fn=fn, z1=z1, z2=z2: fn(z1, z2).backward(), repeat=5, warmup=1)
                rows.append({"bench": "contrastive_loss_fwd_bwd", "impl": name, "K": k, "B": b,
                             "ms": 1000 * stats["seconds_best"], "peak_mib": stats["peak_mib"]})
    return rows


def plain_loop_s_per_epoch(views: list, mask, d_z: int, epochs: int = 3) -> float:
    """Seconds per epoch of a plain PyTorch loop that follows the official training procedure step by step: numpy
    reshuffle of the complete rows every epoch, a host-to-tensor copy per batch, both predictors run forward on
    every step, default (for-each) Adam. Measured in the prediction phase (epoch >= 100), like our epoch rows."""
    complete = mask.all(axis=1)
    xs = [x[complete].astype(np.float32) for x in views]
    torch.manual_seed(0)
    model = Completer(view_dims=[x.shape[1] for x in xs], d_z=d_z)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(xs[0]))
        shuffled = [x[order] for x in xs]
        for b in range(0, len(order), 256):
            batch = [torch.from_numpy(x[b : b + 256]) for x in shuffled]
            zs, x_hats, preds = model(batch, predict=True)
            loss = (cross_view_contrastive(zs[0], zs[1])
                    + 0.1 * reconstruction(x_hats, batch)
                    + 0.1 * dual_prediction(zs[0], zs[1], preds["0_to_1"], preds["1_to_0"]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (time.perf_counter() - start) / epochs


def train_rows(name: str, epochs: int, runtime: rt.Runtime, whole_run: bool) -> list[dict]:
    data = load_mat(DATA / f"{name}.mat")
    preset = LAYOUTS[data.name]
    mask = make_mask(data.labels.size, 2, 0.5, seed=1)
    rows = []
    load0 = os.getloadavg()[0]
    plain = plain_loop_s_per_epoch(data.views, mask, preset["d_z"])
    rows.append({"bench": "train", "dataset": name, "what": "plain_loop_official_procedure_x3", "epochs": 3,
                 "s_per_epoch": plain, "official_s_per_epoch": OFFICIAL[name][0], "loadavg_1min_at_start": load0})
    print(rows[-1], flush=True)
    for label, n_epochs in (("one_epoch_x3", 3), (f"whole_run_{epochs}_epochs", epochs))[: 2 if whole_run else 1]:
        official = Config()  # official architecture and hyperparameters, the layout's d_z and seed
        cfg = dataclasses.replace(
            official, data=DataConfig(layout=data.name), eval=EvalConfig(every_epochs=0),
            loss=LossConfig(prediction_start=min(100, n_epochs // 5) / n_epochs),
            train=dataclasses.replace(official.train, epochs=n_epochs, log_every=10**9))
        out: dict = {}

        def run(cfg: Config = cfg, out: dict = out) -> None:
            out.update(fit_and_cluster(cfg, data.views, data.labels, mask, n_clusters=data.n_clusters,
                                       runtime=runtime))

        load0, cpu0 = os.getloadavg()[0], time.process_time()
        stats = measure(run)
        cpu = time.process_time() - cpu0
        loop = out["summary"]["seconds"]
        row = {"bench": "train", "dataset": name, "what": label, "epochs": n_epochs,
               "steps_per_epoch": out["steps_per_epoch"], "total_s": stats["seconds_best"],
               "train_loop_s": loop, "s_per_epoch": loop / n_epochs, "cpu_s_total": cpu, "peak_mib": stats["peak_mib"],
               "official_s_per_epoch": OFFICIAL[name][0], "ratio_official_over_ours": OFFICIAL[name][0] /
               (loop / n_epochs), "ratio_plain_loop_over_ours": plain / (loop / n_epochs),
               "loadavg_1min_at_start": load0, "acc": out["scores"]["acc"]}
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--datasets", default="LandUse-21,Scene-15")
    parser.add_argument("--whole-run", default=None, help="datasets that also get the whole-run row (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runtime = rt.init("cpu", seed=0)
    rows = loss_rows(args.quick)
    epochs = args.epochs or (10 if args.quick else 500)
    for name in args.datasets.split(","):
        if (DATA / f"{name}.mat").is_file():
            rows += train_rows(name, epochs, runtime, whole_run=args.whole_run is None or name in args.whole_run)
        else:
            print(f"skipping {name}: {DATA / name}.mat not found")
    write_results("completer", rows, notes=(
        f"threads={args.threads}; whole-run rows are measured end to end ({epochs} epochs, final embedding and "
        "k-means included), not extrapolated; s_per_epoch = trainer loop seconds / epochs; "
        "cpu_s_total = process CPU time of the row. "
        "Official code: 0.92 s/epoch"
        " Scene-15, 0.44 s/epoch LandUse-21 (2 threads, quiet machine). loadavg shows how busy the CPU was."))


if __name__ == "__main__":
    main()
