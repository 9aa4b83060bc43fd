"""`lowlabel acr train` as a subprocess on a tiny built-in world (FixMatch + AKC + ARC, EMA teacher), killed with
SIGKILL after a checkpoint and resumed with --resume: the final weights, EMA teacher and ARC tables included, equal
those of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

TINY = ["--image-size", "16", "--labelled-per-class", "1", "--ssl", "fixmatch", "--device", "cpu", "--threads", "1",
        *(x for kv in ["synthetic.size=16", "synthetic.n_source=64", "synthetic.source_steps=2", "synthetic.n_train=45",
                       "synthetic.n_test=18", "resnet_layers=[1,1,1,1]", "bottleneck=false", "width=4",
                       "small_stem=true", "labelled_bs=6", "unlabelled_bs=6", "steps_per_epoch=3",
                       "akc_gate_classes=0", "mmd_threshold=1.0", "arc_start=-1", "arc_min_rows=0", "reg_warmup=1",
                       "train.checkpoint_every=4", "train.keep_checkpoints=100"] for x in ("--set", kv))]


def test_train_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path: Path, lowlabel_processes) -> None:
    procs, steps = lowlabel_processes, 40
    run, reference = procs.kill_and_resume(["acr", "train"], ["--iterations", steps, *TINY], slug="acr", steps=steps,
                                           cwd=tmp_path)
    assert any(k.startswith("teacher.") for k in reference) and "tables.labelled" in reference
    assert len(json.loads((run / "run.json").read_text())["resumed"]) == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_labelled"] == 9 and 0 <= summary["test_accuracy"] <= 1
