"""`lowlabel grounding train` as a subprocess, killed (SIGKILL) after a checkpoint and resumed with --resume: the
final weights equal those of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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


def test_train_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path: Path, lowlabel_processes) -> None:
    procs, steps = lowlabel_processes, 300
    write_grounding_set(tmp_path / "data" / "train.npz", random_set(24, 0))
    write_grounding_set(tmp_path / "data" / "val.npz", random_set(6, 1))
    train = ["--data", "data", "--iterations", steps, "--set", "train.checkpoint_every=10",
             "--set", "train.keep_checkpoints=100", *TINY]
    run, _ = procs.kill_and_resume(["grounding", "train"], train, slug="grounding_ckd", steps=steps, cwd=tmp_path,
                                   timeout=120)
    record = json.loads((run / "run.json").read_text())
    assert record["data"] == str((tmp_path / "data").resolve()) and len(record["resumed"]) == 1
    assert json.loads((run / "summary.json").read_text())["test"]["phrases"] == 6
