"""Batch sources for the trainer: a deterministic, resumable order of batches per epoch, sharded by rank.

A source has `steps_per_epoch` and `epoch(e, start)`, which yields the batches of epoch `e` from batch `start` on;
the order depends only on (seed, epoch), so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lowlabel.engine.runtime import Runtime
from lowlabel.errors import LowlabelError


class BatchSource(Protocol):
    steps_per_epoch: int

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Any]: ...


class _Skip(Sampler[int]):
    """The indices of `base` after the first `skip`."""

    def __init__(self, base: Sampler[int], skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.base)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]


class DatasetBatches:
    """Batches of a map-style Dataset through a DataLoader with torch's DistributedSampler (one replica on a single
    process), reshuffled per epoch by (seed, epoch)."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        runtime: Runtime,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        per_rank = n // runtime.world_size
        if per_rank < batch_size and drop_last:
            raise LowlabelError(
                f"dataset has {n} samples, fewer than one batch of {batch_size} per rank "
                f"({runtime.world_size} rank(s)); lower the batch size or add data"
            )
        self.dataset, self.batch_size, self.runtime = dataset, batch_size, runtime
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.num_workers, self.collate_fn = num_workers, collate_fn
        self.steps_per_epoch = per_rank // batch_size if drop_last else -(-per_rank // batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Any]:
        sampler = DistributedSampler(
            self.dataset,  # type: ignore[arg-type]
            num_replicas=self.runtime.world_size,
            rank=self.runtime.rank,
            shuffle=self.shuffle,
            seed=self.seed,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=_Skip(sampler, start * self.batch_size),
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.runtime.device.type == "cuda",
            persistent_workers=False,
            # the loader's base seed (worker seeds) comes from here, not from the global generator, which a resumed
            # run would otherwise see drawn from once more than the uninterrupted run
            generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch),
        )
        yield from loader


class TensorBatches:
    """Batches sliced from tensors that already live on the device: no DataLoader, no host round trip.

    Each epoch draws a permutation from a generator seeded by (seed, epoch); under DDP every rank takes its own
    contiguous share of that permutation. The last partial batch is kept unless `drop_last`.
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        batch_size: int,
        runtime: Runtime,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if not tensors:
            raise LowlabelError("TensorBatches needs at least one tensor")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise LowlabelError(f"tensors disagree on the number of samples: {[t.shape[0] for t in tensors]}")
        self.tensors = [t.to(runtime.device) for t in tensors]
        self.batch_size, self.runtime, self.seed = batch_size, runtime, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.per_rank = n // runtime.world_size
        if self.per_rank == 0 or (drop_last and self.per_rank < batch_size):
            raise LowlabelError(f"{n} samples are too few for batches of {batch_size} on {runtime.world_size} rank(s)")
        self.steps_per_epoch = self.per_rank // batch_size if drop_last else -(-self.per_rank // batch_size)

    def _order(self, epoch: int) -> torch.Tensor:
        n = self.tensors[0].shape[0]
        if not self.shuffle:
            order = torch.arange(n)
        else:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=gen)
        mine = order[self.runtime.rank * self.per_rank : (self.runtime.rank + 1) * self.per_rank]
        return mine.to(self.runtime.device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self._order(epoch)
        for b in range(start, self.steps_per_epoch):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield tuple(t.index_select(0, index) for t in self.tensors)


@torch.no_grad()
def embed(fn: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor, *, batch_size: int = 512,
          device: torch.device | str | None = None) -> torch.Tensor:
    """`fn` over `data` in chunks of `batch_size` rows (moved to `device` when given), without autograd, with a
    module `fn` in eval mode (its mode restored after); the outputs concatenated along the first axis."""
    if batch_size < 1:
        raise LowlabelError(f"batch_size={batch_size}: must be at least 1")
    module = fn if isinstance(fn, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        outs = [fn(chunk if device is None else chunk.to(device)) for chunk in data.split(batch_size)]
    finally:
        if module is not None:
            module.train(was_training)
    return torch.cat(outs) if outs else data.new_zeros((0,))
