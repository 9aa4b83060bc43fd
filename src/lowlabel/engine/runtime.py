"""Device choice, seeding, and torchrun/DDP initialisation with a clean single-process fallback."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lowlabel.errors import LowlabelError


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its device and its place among the torchrun ranks (rank 0 of 1 otherwise)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' picks cuda > mps > cpu; 'cpu', 'cuda', 'cuda:N' and 'mps' are taken as asked (and checked)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LowlabelError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LowlabelError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LowlabelError("device 'mps' was asked for but is not available; use --device cpu or auto")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); with `deterministic`, ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the CPU generator seeded by `seed`, and give the global stream back afterwards: a model
    built inside gets the weights `torch.manual_seed(seed)` would give it, with no process-wide side effect. (Only the
    CPU generator: `torch.manual_seed` would also reseed every CUDA generator, which fork_rng(devices=[]) does not
    restore.)"""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def init(device: str = "auto", seed: int = 0, deterministic: bool = False) -> Runtime:
    """Start this process: read torchrun's environment, join the process group if there are several ranks
    (nccl on CUDA, gloo otherwise), pick the device and seed everything with `seed` (the same on every rank,
    so models are built identically; the trainer offsets the seed per rank for data and augmentation)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = select_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        dist.init_process_group(backend=backend)
    seed_everything(seed, deterministic)
    return Runtime(device=chosen, rank=rank, world_size=world_size, local_rank=local_rank)


def set_threads(threads: int) -> None:
    """torch's CPU thread count (`--threads`); 0 keeps torch's default."""
    if threads < 0:
        raise LowlabelError(f"--threads {threads}: must be 0 (torch's default) or positive")
    if threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """torch's intra-op CPU thread count set to `threads` inside the block, restored afterwards. Demos with small
    tensors use 1: on a busy 2-core machine two OpenMP threads made steps several times slower, and one thread keeps
    their numbers the same whatever the machine's default."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def shutdown() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def print0(*args: Any, **kwargs: Any) -> None:
    """`print` on rank 0 only."""
    if rank() == 0:
        print(*args, **kwargs)


def all_gather(tensor: torch.Tensor, with_grad: bool = False) -> torch.Tensor:
    """Concatenate `tensor` from every rank along dim 0 (identity on a single process).

    With `with_grad`, gradients flow back to every rank's input (torch.distributed.nn); without, the result is detached.
    All ranks must pass tensors of the same shape.
    """
    if not is_distributed():
        return tensor
    if with_grad:
        from torch.distributed.nn.functional import all_gather as gather_with_grad

        return torch.cat(gather_with_grad(tensor), dim=0)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over ranks (a copy; identity on a single process)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (identity on a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()
