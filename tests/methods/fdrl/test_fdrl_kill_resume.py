"""`lowlabel fdrl train` on a class-folder dataset as a subprocess, killed with SIGKILL after a checkpoint and resumed
with --resume: the final weights (centres included) equal those of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

from fdrl_helpers import write_class_folders

TINY = ["--image-size", "32", "--device", "cpu", "--threads", "1",
        *(x for kv in ["width=4", "batch_size=4", "latent_dim=4", "train.epochs=0", "train.checkpoint_every=2",
                       "train.keep_checkpoints=100"] for x in ("--set", kv))]


def test_train_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path: Path, lowlabel_processes) -> None:
    procs, steps = lowlabel_processes, 60
    data = write_class_folders(tmp_path / "faces")
    run, reference = procs.kill_and_resume(["fdrl", "train"], ["--data", data, *TINY, "--set",
                                                                f"train.max_steps={steps}"],
                                           slug="fdrl", steps=steps, cwd=tmp_path)
    assert any("centres" in k for k in reference)
    assert json.loads((run / "run.json").read_text())["resumed"]
