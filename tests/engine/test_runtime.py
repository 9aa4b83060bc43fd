from __future__ import annotations

import pytest
import torch

from lowlabel.engine import runtime as rt
from lowlabel.errors import LowlabelError


def test_single_process_fallbacks():
    runtime = rt.init("cpu", seed=3)
    assert runtime.device.type == "cpu" and runtime.rank == 0 and not runtime.distributed and runtime.is_main
    t = torch.arange(3.0, requires_grad=True)
    assert rt.all_gather(t, with_grad=True) is t
    assert torch.equal(rt.all_reduce_mean(t), t)
    assert rt.broadcast_object({"a": 1}) == {"a": 1}
    rt.barrier()


def test_seeding_is_reproducible():
    rt.seed_everything(11)
    a = torch.rand(3)
    rt.seed_everything(11)
    assert torch.equal(a, torch.rand(3))


def test_device_choice():
    assert rt.select_device("cpu") == torch.device("cpu")
    assert rt.select_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(LowlabelError, match="no CUDA GPU"):
            rt.select_device("cuda")
    with pytest.raises(LowlabelError, match="unknown device"):
        rt.select_device("tpu9")
