"""Trainer time per step over a bare PyTorch loop on the same model and data (target ratio < 1.05).

Both loops draw the same batches from tensors in memory, run forward, backward and an SGD step. Runs alternate
(bare, trainer, bare, trainer, ...) so that load from other processes hits both alike; the best of the repeats is
reported, as process CPU time per step (robust on a shared machine) and wall time per step.
`python benchmarks/engine_overhead.py [--quick]`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import torch
from torch import nn

from _common import write_results
from lowlabel.engine import runtime as rt
from lowlabel.engine.batches import TensorBatches
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.trainer import Trainer

SIZES = {"mlp-256": (256, 2), "mlp-1024": (1024, 3)}


def build(width: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(64, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> dict[str, torch.Tensor]:
    x, y = batch
    return {"ce": nn.functional.cross_entropy(model(x), y)}


def bare(model: nn.Module, source: TensorBatches, steps: int) -> tuple[float, float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    c0, t0 = time.process_time(), time.perf_counter()
    done = 0
    while done < steps:
        for x, y in source.epoch(done // source.steps_per_epoch):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return (time.process_time() - c0) / steps, (time.perf_counter() - t0) / steps


def engine(model: nn.Module, source: TensorBatches, steps: int, runtime: rt.Runtime) -> tuple[float, float]:
    trainer = Trainer(model, step, config=TrainConfig(max_steps=steps, log_every=50),
                      optim=OptimConfig(name="sgd", lr=0.01, momentum=0.0), runtime=runtime)
    c0, t0 = time.process_time(), time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer's progress lines are not part of the measurement
        trainer.fit(source)
    return (time.process_time() - c0) / steps, (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    steps, repeats = (100, 3) if args.quick else (400, 5)
    runtime = rt.init("cpu", seed=0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8192, 64, generator=gen), torch.randint(0, 10, (8192,), generator=gen)
    source = TensorBatches([x, y], 256, runtime, seed=0)
    rows = []
    for name, (width, depth) in SIZES.items():
        bare_times, engine_times = [], []
        for _ in range(repeats):
            bare_times.append(bare(build(width, depth), source, steps))
            engine_times.append(engine(build(width, depth), source, steps, runtime))
        bc, bw = min(t[0] for t in bare_times), min(t[1] for t in bare_times)
        ec, ew = min(t[0] for t in engine_times), min(t[1] for t in engine_times)
        rows.append({"model": name, "params": sum(p.numel() for p in build(width, depth).parameters()),
                     "bare_cpu_ms": 1e3 * bc, "trainer_cpu_ms": 1e3 * ec, "ratio_cpu": ec / bc,
                     "bare_wall_ms": 1e3 * bw, "trainer_wall_ms": 1e3 * ew, "ratio_wall": ew / bw})
    write_results("engine_overhead", rows, notes=f"batch 256, {steps} steps per run, best of {repeats} alternating "
                  f"runs, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
