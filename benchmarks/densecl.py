"""DenseCL hot paths: training-step time of DenseCL vs its MoCo-v2 mode (lambda = 0, dense branch not built),
the FLOP share of the dense branch (counted with torch.utils.flop_counter on the meta device), and the throughput
of the MoCo-v2 augmentation. Huge pages on for large CPU tensors, as in `lowlabel` (see _common.py).

    python benchmarks/densecl.py [--quick] [--size 224] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from _common import measure, write_results
from lowlabel.data.transforms import moco_v2, two_views
from lowlabel.methods.densecl.losses import dense_correspondence, dense_info_nce
from lowlabel.methods.densecl.model import DenseCL

QUEUE = 65536


def build(arch: str, dense: bool, device: str = "cpu") -> DenseCL:
    hid = 2048 if arch == "resnet50" else 512
    return DenseCL(arch=arch, hid_dim=hid, out_dim=128, queue_size=QUEUE, dense=dense).to(device)


def train_step(model: DenseCL, opt: torch.optim.Optimizer | None, a: torch.Tensor, b: torch.Tensor, *,
               dense: bool) -> None:
    """One step as the trainer runs it: forward (key update first), backward, SGD step, enqueue."""
    losses, keys = model(a, b, lam=0.5 if dense else 0.0, momentum=0.999)
    sum(losses.values()).backward()  # type: ignore[union-attr]
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.enqueue(keys)


def step_flops(arch: str, dense: bool, batch: int, size: int) -> int:
    """FLOPs of one training step (forward + backward), counted on the meta device (no real compute)."""
    model = build(arch, dense, "meta")
    a = torch.empty(batch, 3, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        train_step(model, None, a, a.clone(), dense=dense)
    return counter.get_total_flops()


def time_pair(arch: str, batch: int, size: int, *, warmup: int, min_rounds: int, min_seconds: float) -> dict[str, Any]:
    """DenseCL and MoCo-v2-mode steps timed alternately (D, M, D, M, ...) on the same inputs, after `warmup` untimed
    rounds (step times here keep falling for several steps as the allocator and huge pages settle), for at least
    `min_rounds` rounds and `min_seconds` of timed steps (single steps on this machine vary by up to +-25%). Overhead
    from the best step of each (noise only adds time), with the median and range of the per-round ratios beside it.
    Peak memory: one more step each."""
    steps = {}
    for dense in (True, False):
        torch.manual_seed(0)
        model = build(arch, dense)
        opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
        steps[dense] = functools.partial(train_step, model, opt, dense=dense)
    a, b = torch.randn(batch, 3, size, size), torch.randn(batch, 3, size, size)
    times: dict[bool, list[float]] = {True: [], False: []}
    round_ = 0
    while round_ < warmup + min_rounds or sum(times[True]) + sum(times[False]) < min_seconds:
        for dense in (True, False):
            seconds = measure(lambda dense=dense: steps[dense](a, b))["seconds_best"]
            if round_ >= warmup:
                times[dense].append(seconds)
        round_ += 1
    ratios = [d / m for d, m in zip(times[True], times[False], strict=True)]
    peaks = {dense: measure(lambda dense=dense: steps[dense](a, b))["peak_mib"] for dense in (True, False)}
    return {"densecl_s": min(times[True]), "mocov2_s": min(times[False]),
            "overhead_pct": 100 * (min(times[True]) / min(times[False]) - 1),
            "overhead_median_pct": 100 * (statistics.median(ratios) - 1),
            "overhead_range_pct": [round(100 * (min(ratios) - 1), 1), round(100 * (max(ratios) - 1), 1)],
            "timed_rounds": len(ratios), "densecl_peak_mib": peaks[True], "mocov2_peak_mib": peaks[False]}


def dense_branch_seconds(arch: str, batch: int, size: int, repeat: int = 10) -> float:
    """Best time of the work only DenseCL does, on C5 maps of the real size: the query dense head forward and
    backward, the key dense head forward, the correspondence and the dense InfoNCE forward and backward. A short
    piece repeated on its own, so it is far less noisy than the difference of two whole steps."""
    torch.manual_seed(0)
    model = build(arch, True)
    with torch.no_grad():
        maps = model.encoder_q.backbone.forward_features(torch.randn(2 * batch, 3, size, size))
    f_q, f_k = maps[:batch].clone().requires_grad_(), maps[batch:].clone()
    head_q, head_k = model.encoder_q.neck.dense_head, model.encoder_k.module.neck.dense_head

    def branch() -> None:
        r_q = F.normalize(head_q(f_q).flatten(2), dim=1)
        with torch.no_grad():
            r_k = F.normalize(head_k(f_k).flatten(2), dim=1)
        match = dense_correspondence(f_q.detach().flatten(2), f_k.flatten(2))
        (0.5 * dense_info_nce(r_q, r_k, match, model.queue_dense.features)).backward()

    return measure(branch, repeat=repeat, warmup=2)["seconds_best"]


def augment_rate(batch: int, size: int, source: int, repeat: int) -> float:
    pipeline = moco_v2(size)
    x = torch.randint(0, 256, (batch, 3, source, source), dtype=torch.uint8)
    t = measure(lambda: two_views(pipeline, x), repeat=repeat, warmup=1)
    return 2 * batch / t["seconds_best"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18 only, smaller images, one timed round")
    parser.add_argument("--size", type=int, default=0, help="image side for the step timings (default 224; 64 quick)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or (64 if args.quick else 224)
    archs = ["resnet18"] if args.quick else ["resnet18", "resnet50"]
    timing = ({"warmup": 1, "min_rounds": 1, "min_seconds": 0.0} if args.quick
              else {"warmup": 4, "min_rounds": 6, "min_seconds": 90.0})
    rows = []
    for arch in archs:
        for batch in (8, 32):
            flops = {d: step_flops(arch, d, batch, 224) for d in (True, False)}
            share = (flops[True] - flops[False]) / flops[True]
            t0 = time.perf_counter()
            steps = time_pair(arch, batch, size, **timing)
            branch = dense_branch_seconds(arch, batch, size)
            rows.append({
                "arch": arch, "batch": batch, "size": size, **steps, "dense_branch_s": branch,
                "dense_branch_pct_of_mocov2": 100 * branch / steps["mocov2_s"],
                "dense_flop_share_224_pct": 100 * share,
                "dense_flop_share_at_size_pct": 100 * (1 - step_flops(arch, False, batch, size)
                                                       / step_flops(arch, True, batch, size)),
                "wall_s": time.perf_counter() - t0,
            })
    aug_rows = [{"aug_size": s, "batch": 32, "images_per_s": augment_rate(32, s, src, 3)}
                for s, src in ((32, 32), (224, 256))]
    notes = (f"queue {QUEUE}; step = forward (key EMA first) + backward + SGD + enqueue on random inputs; "
             f"{timing['warmup']} untimed rounds, then alternating timed rounds (DenseCL, MoCo-v2 mode), at least "
             f"{timing['min_rounds']} and {timing['min_seconds']:.0f} s; step times are the best "
             f"round, overhead = best DenseCL / best MoCo-v2 - 1 (median and range of the per-round ratios beside "
             f"it); dense_branch_s = the dense heads, correspondence and dense InfoNCE alone (forward + backward, "
             f"best of 10), as % of the best MoCo-v2 step; FLOP share = 1 - MoCo FLOPs / DenseCL FLOPs "
             f"(forward + backward). Augmentation: {aug_rows}")
    write_results("densecl", rows, notes)


if __name__ == "__main__":
    main()
