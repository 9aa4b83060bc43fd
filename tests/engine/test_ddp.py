"""A real 2-process DDP run (gloo, CPU) through torchrun, compared with one process on the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ddp_worker import data, model  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_ddp_matches_single_process_on_the_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1] / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(HERE / "ddp_worker.py"), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    for g0, g1 in zip(r0["grads"], r1["grads"], strict=True):  # DDP: every rank holds the same averaged gradient
        for a, b in zip(g0, g1, strict=True):
            assert torch.equal(a, b)

    x, y = data()  # one process, same model, global batch = rank 0's batch + rank 1's batch at each step
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    half = x.shape[0] // 2
    for s in range(3):
        rows = torch.cat([torch.arange(s * 8, s * 8 + 8), half + torch.arange(s * 8, s * 8 + 8)])
        opt.zero_grad()
        ((net(x[rows]) - y[rows]) ** 2).mean().backward()
        for p, g in zip(net.parameters(), r0["grads"][s], strict=True):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)
        opt.step()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-5, atol=1e-6)
        assert torch.equal(r0["state"][k], r1["state"][k])

    assert torch.equal(r0["gathered"], torch.tensor([1.0, 1.0, 2.0, 2.0]))
    # each rank's loss uses the gathered tensor; the gradient reaching rank r sums both ranks' contributions
    assert torch.equal(r0["tgrad"], 2 * torch.tensor([0.0, 1.0]))
    assert torch.equal(r1["tgrad"], 2 * torch.tensor([2.0, 3.0]))


def test_lowlabel_train_under_torchrun_makes_one_run_folder_and_reports_once(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "lowlabel", "train", "completer", "--out", str(tmp_path),
           "--set", "train.epochs=1", "--set", "eval.every_epochs=0", "--threads", "1", "--device", "cpu"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "completer").iterdir()
    assert (run / "summary.json").is_file() and (run / "assignments.csv").is_file()
    assert done.stdout.count("run folder:") == 1, done.stdout  # rank 0 only, though both ranks finish training
