"""`lowlabel grounding train` as a subprocess, killed (SIGKILL) after a checkpoint and resumed with --resume: the
final weights equal those of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lowlabel.engine import checkpoint
from lowlabel.methods.grounding_ckd.features import GroundingSet, write_grounding_set

TINY = ["--set", "embedder=random:8", "--set", "token_dim=8", "--set", "lstm_dim=8", "--set", "hidden_dim=16",
        "--set", "embed_dim=8", "--set", "batch_size=4", "--set", "ramp_block=20", "--device", "cpu",
        "--threads", "1"]


def random_set(n: int, seed: int) -> GroundingSet:
    """`n` images of 5 random proposals, one caption each naming one of three classes."""
    g = np.random.default_rng(seed)
    xy = g.uniform(0, 40, (n, 5, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + g.uniform(5, 20, (n, 5, 2)).astype(np.float32)], -1)
    cls = np.arange(n) % 3
    words = ["red circle", "blue square", "green star"]
    return GroundingSet([f"i{i}.jpg" for i in range(n)], g.normal(size=(n, 5, 6)).astype(np.float32), boxes,
                        np.ones((n, 5), bool), g.uniform(0, 1, (n, 5, 3)).astype(np.float32), ["c", "s", "t"],
                        np.arange(n), [words[c] for c in cls], np.arange(n), [words[c] for c in cls], cls,
                        boxes[:, :1], np.ones((n, 1), bool))


def lowlabel(*args: object, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lowlabel", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output
    return output


def final_model(root: Path) -> dict[str, torch.Tensor]:
    (run,) = (root / "grounding_ckd").iterdir()
    return checkpoint.load(max((run / "checkpoints").glob("step_*.pt")))["model"]


def test_train_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path: Path) -> None:
    write_grounding_set(tmp_path / "data" / "train.npz", random_set(24, 0))
    write_grounding_set(tmp_path / "data" / "val.npz", random_set(6, 1))
    steps = 300
    train = ["grounding", "train", "--data", "data", "--iterations", steps, "--set", "train.checkpoint_every=10",
             "--set", "train.keep_checkpoints=100", *TINY]
    whole = lowlabel(*train, "--out", "whole", cwd=tmp_path)
    killed = lowlabel(*train, "--out", "killed", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "killed").glob("grounding_ckd/*/checkpoints/step_*.pt")):
        assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    (run,) = (tmp_path / "killed" / "grounding_ckd").iterdir()
    written = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("step_*.pt"))
    assert written and written[-1] < steps, written  # killed mid-run
    assert not (run / "summary.json").exists()
    finish(lowlabel("grounding", "train", "--resume", run, "--threads", "1", "--device", "cpu", cwd=tmp_path))
    finish(whole)
    reference, resumed = final_model(tmp_path / "whole"), final_model(tmp_path / "killed")
    assert (run / "checkpoints" / f"step_{steps:08d}.pt").is_file()
    assert reference.keys() == resumed.keys() and all(torch.equal(reference[k], resumed[k]) for k in reference)
    record = json.loads((run / "run.json").read_text())
    assert record["data"] == str((tmp_path / "data").resolve()) and len(record["resumed"]) == 1
    assert json.loads((run / "summary.json").read_text())["test"]["phrases"] == 6
