"""Run under torchrun by test_ddp.py: a few DDP steps of a small model, then the all-gather-with-gradient check."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from lowlabel.engine import runtime as rt
from lowlabel.engine.batches import TensorBatches
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.trainer import Trainer


def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=gen)
    return x, x @ torch.randn(6, 2, generator=gen)


def model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))


def main(out: Path) -> None:
    runtime = rt.init("cpu", seed=0)
    x, y = data()
    net = model()
    grads = []

    def step(m, batch, s):
        return {"mse": ((m(batch[0]) - batch[1]) ** 2).mean()}

    def keep_grads(m, aux, s):
        grads.append([p.grad.clone() for p in m.parameters()])

    trainer = Trainer(net, step, config=TrainConfig(max_steps=3, log_every=100),
                      optim=OptimConfig(name="sgd", lr=0.1, momentum=0.0), runtime=runtime, after_step=keep_grads)
    trainer.fit(TensorBatches([x, y], 8, runtime, shuffle=False))

    t = torch.full((2,), float(runtime.rank + 1), requires_grad=True)
    gathered = rt.all_gather(t, with_grad=True)
    (gathered * torch.arange(4.0)).sum().backward()
    torch.save({"state": net.state_dict(), "grads": grads, "gathered": gathered.detach(), "tgrad": t.grad},
               out / f"rank{runtime.rank}.pt")
    rt.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
