"""Run under torchrun (2 CPU processes, gloo) by test_densecl_ddp.py: one DenseCL training step, then each rank
saves its queues, its own keys and its key-encoder weights to OUT/rank<r>.pt."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from lowlabel.engine import runtime as rt
from lowlabel.engine.batches import TensorBatches
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.trainer import Trainer
from lowlabel.methods.densecl.model import DenseCL, Keys


def main(out: Path) -> None:
    torch.set_num_threads(1)
    runtime = rt.init("cpu", seed=0)
    model = DenseCL(arch="resnet18", small_stem=True, width=8, hid_dim=32, out_dim=16, queue_size=16)
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    own: list[Keys] = []

    def step_fn(mdl: torch.nn.Module, batch: tuple[torch.Tensor, ...], step: int) -> tuple:
        return mdl(batch[0], batch[0].flip(-1), lam=0.5, momentum=0.99)

    def after(mdl: torch.nn.Module, keys: Keys, step: int) -> None:
        own.append(keys)
        mdl.enqueue(keys)

    trainer = Trainer(model, step_fn, config=TrainConfig(max_steps=1, amp=False),
                      optim=OptimConfig(name="sgd", lr=0.1, momentum=0.0), runtime=runtime,
                      params=model.encoder_q.parameters(), after_step=after)
    trainer.fit(TensorBatches([images], 4, runtime))
    torch.save({
        "world": rt.world_size(),
        "queue_global": model.queue_global.features.clone(),
        "queue_dense": model.queue_dense.features.clone(),
        "ptr": int(model.queue_global.ptr),
        "keys_global": own[0].global_.clone(),
        "keys_pooled": own[0].pooled.clone(),
        "key_params": torch.cat([p.flatten() for p in model.encoder_k.parameters()]),
        "query_params": torch.cat([p.flatten() for p in model.encoder_q.parameters()]),
    }, out / f"rank{runtime.rank}.pt")
    rt.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
