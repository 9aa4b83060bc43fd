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


def test_seeded_builds_like_manual_seed_and_restores_the_global_stream():
    from lowlabel.engine.runtime import seeded

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    reference = torch.nn.Linear(4, 2).weight.detach().clone()
    torch.manual_seed(123)
    with seeded(7):
        built = torch.nn.Linear(4, 2).weight.detach().clone()
    assert torch.equal(built, reference)  # the weights torch.manual_seed(7) gives
    assert torch.equal(torch.rand(3), expected_next)  # the outer stream carries on as if nothing happened
