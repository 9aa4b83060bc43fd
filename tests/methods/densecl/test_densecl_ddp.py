"""Two CPU processes under torchrun (gloo): one DenseCL step leaves identical queues holding both ranks' keys."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two interpreters start and import torch: ~20 s CPU, 48 s wall under heavy load
def test_two_process_step_gathers_keys_into_identical_queues(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(HERE / "ddp_densecl_step.py"), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    for name in ("queue_global", "queue_dense", "key_params", "query_params"):
        torch.testing.assert_close(r0[name], r1[name], rtol=0, atol=0)
    assert r0["ptr"] == r1["ptr"] == 8  # 4 keys from each rank
    for queue, keys in (("queue_global", "keys_global"), ("queue_dense", "keys_pooled")):
        torch.testing.assert_close(r0[queue][:, :4], r0[keys].T)  # rank order: rank 0's keys, then rank 1's
        torch.testing.assert_close(r0[queue][:, 4:8], r1[keys].T)
    assert not torch.allclose(r0["keys_global"], r1["keys_global"])
