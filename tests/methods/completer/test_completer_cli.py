"""COMPLETER on a user's own file, end to end through the CLI: a two-view `my_views.mat` with and without labels
through `lowlabel completer cluster` (subprocesses), and a `lowlabel train completer` subprocess killed (SIGKILL)
after its first checkpoint and resumed with `--resume`, which must end with the weights of an uninterrupted run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from lowlabel.engine.config import load_config
from lowlabel.methods.completer.recipe import Config
from lowlabel_cli import run_here_ok

TINY = ["--set", "model.hidden=[32,32]", "--set", "model.predictor_hidden=[16]", "--set", "data.batch_size=16",
        "--device", "cpu", "--threads", "1"]


def write_views(path: Path, *, labels: bool, n: int = 90, seed: int = 0) -> np.ndarray:
    """A two-view file in the user format (key X: 1x2 cell of (n, 6) and (n, 4) matrices; Y: 1-based labels of
    three well-separated classes when `labels`); returns the 0-based labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = rng.normal(0, 4, (3, 10))
    x = np.abs(centres[y] + rng.normal(0, 0.3, (n, 10)))
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0], cells[0, 1] = x[:, :6], x[:, 6:]
    sio.savemat(path, {"X": cells, **({"Y": (y + 1).reshape(-1, 1).astype(np.uint8)} if labels else {})})
    return y


def test_cluster_own_two_view_file_with_and_without_labels(tmp_path: Path, lowlabel_processes) -> None:
    procs = lowlabel_processes
    y = write_views(tmp_path / "my_views.mat", labels=True)
    write_views(tmp_path / "my_unlabelled.mat", labels=False)
    common = ["--seeds", "1", "--set", "train.max_steps=30", *TINY]
    labelled = procs.start("completer", "cluster", "my_views.mat", "--missing-rate", "0.2,0.5", "--out", "a", *common,
                            cwd=tmp_path)
    unlabelled = procs.start("completer", "cluster", "my_unlabelled.mat", "--n-clusters", "3", "--out", "b", *common,
                          cwd=tmp_path)
    text = procs.finish(labelled)
    assert "ACC" in text
    run = procs.only_run(tmp_path / "a", "completer")
    results = json.loads((run / "results.json").read_text())
    assert results["layout"] == "generic" and results["scored"] and results["missing_rates"] == [0.2, 0.5]
    assert [(r["missing_rate"], r["n_complete"]) for r in results["runs"]] == [(0.2, 72), (0.5, 45)]
    assert results["rates"][1]["acc"] > 0.6  # three classes 4 sd apart: far above chance (1/3)
    assert json.loads((run / "run.json").read_text())["data"] == str((tmp_path / "my_views.mat").resolve())
    for png in ("latents_tsne.png", "sweep.png"):
        assert (run / png).read_bytes()[:4] == b"\x89PNG"
    sub = run / "rate0.5_seed1"
    assert [p.name for p in (sub / "checkpoints").glob("step_*.pt")] == ["step_00000030.pt"]
    rows = list(csv.reader((sub / "assignments.csv").open()))
    assert rows[0] == ["sample", "cluster"] and [int(r[0]) for r in rows[1:]] == list(range(y.size))
    assert load_config(Config, sub / "config.yaml").model.view_dims == [6, 4]

    text = procs.finish(unlabelled)
    assert "no labels" in text and "ACC" not in text
    run = procs.only_run(tmp_path / "b", "completer")
    results = json.loads((run / "results.json").read_text())
    assert not results["scored"] and results["rates"] == [] and "acc" not in results["runs"][0]
    clusters = [int(r[1]) for r in list(csv.reader((run / "rate0.5_seed1" / "assignments.csv").open()))[1:]]
    assert len(clusters) == y.size and set(clusters) <= {0, 1, 2}
    assert (run / "latents_tsne.png").is_file() and (run / "rate0.5_seed1" / "checkpoints").is_dir()


def test_train_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      lowlabel_processes) -> None:
    procs, steps = lowlabel_processes, 300
    monkeypatch.chdir(tmp_path)
    write_views(tmp_path / "my_views.mat", labels=True, n=120)
    train = ["train", "completer", "--data", "my_views.mat", "--set", f"train.max_steps={steps}",
             "--set", "train.checkpoint_every=10", "--set", "train.keep_checkpoints=100", *TINY]
    killed = procs.start(*train, "--out", "killed", cwd=tmp_path)
    run = procs.kill_after_checkpoint(killed, tmp_path / "killed", "completer", steps, timeout=90)
    run_here_ok(*train, "--out", "whole")  # the uninterrupted run
    assert "resumed from" in run_here_ok("train", "completer", "--resume", run, "--threads", "1", "--device", "cpu")
    procs.assert_same_weights(procs.only_run(tmp_path / "whole", "completer"), run, steps)
    record = json.loads((run / "run.json").read_text())
    assert record["data"] == str((tmp_path / "my_views.mat").resolve()) and len(record["resumed"]) == 1
    assert (run / "assignments.csv").is_file() and (run / "metrics.jsonl").is_file()
