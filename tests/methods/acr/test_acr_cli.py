"""`lowlabel acr train` as a subprocess on a tiny built-in world (FixMatch + AKC + ARC, EMA teacher), killed with
SIGKILL after a checkpoint and resumed with --resume: the final weights, EMA teacher and ARC tables included, equal
those of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from lowlabel.engine import checkpoint

TINY = ["--image-size", "16", "--labelled-per-class", "1", "--ssl", "fixmatch", "--device", "cpu", "--threads", "1",
        *(x for kv in ["synthetic.size=16", "synthetic.n_source=64", "synthetic.source_steps=2", "synthetic.n_train=45",
                       "synthetic.n_test=18", "resnet_layers=[1,1,1,1]", "bottleneck=false", "width=4",
                       "small_stem=true", "labelled_bs=6", "unlabelled_bs=6", "steps_per_epoch=3",
                       "akc_gate_classes=0", "mmd_threshold=1.0", "arc_start=-1", "arc_min_rows=0", "reg_warmup=1",
                       "train.checkpoint_every=4", "train.keep_checkpoints=100"] for x in ("--set", kv))]


def lowlabel(*args: object, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lowlabel", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    return output


def only_run(root: Path) -> Path:
    (run,) = (root / "acr").iterdir()
    return run


def test_train_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path: Path) -> None:
    steps = 40
    whole = lowlabel("acr", "train", "--iterations", steps, *TINY, "--out", "whole", cwd=tmp_path)
    killed = lowlabel("acr", "train", "--iterations", steps, *TINY, "--out", "killed", cwd=tmp_path)
    deadline = time.monotonic() + 180
    while not list((tmp_path / "killed").glob("acr/*/checkpoints/step_*.pt")):
        assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    run = only_run(tmp_path / "killed")
    written = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("step_*.pt"))
    assert written and written[-1] < steps, written  # killed mid-run
    assert not (run / "summary.json").exists()
    finish(lowlabel("acr", "train", "--resume", run, "--threads", "1", "--device", "cpu", cwd=tmp_path))
    finish(whole)
    newest = f"step_{steps:08d}.pt"
    reference = checkpoint.load(only_run(tmp_path / "whole") / "checkpoints" / newest)["model"]
    resumed = checkpoint.load(run / "checkpoints" / newest)["model"]
    assert any(k.startswith("teacher.") for k in reference) and "tables.labelled" in reference
    assert reference.keys() == resumed.keys() and all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert len(json.loads((run / "run.json").read_text())["resumed"]) == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_labelled"] == 9 and 0 <= summary["test_accuracy"] <= 1
