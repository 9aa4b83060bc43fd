"""DTC on a user's own files through the command line: own case names, HDF5 and NIfTI cases, unlabelled cases
without labels, config precedence, --resume keeping --data, and kill-and-resume giving the uninterrupted weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lowlabel.data.io import read_h5_volume, read_nifti, write_h5, write_nifti
from lowlabel.data.synth.volumes import VolumeConfig, generate_volume
from lowlabel.engine.config import load_config
from lowlabel.engine.recipe import lr_factor
from lowlabel.errors import LowlabelError
from lowlabel.methods.dtc import recipe
from lowlabel.methods.dtc.cli import app

SHAPE = (24, 24, 20)


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """`--threads 1` in this process sets torch's global thread count; give the other tests theirs back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
TINY = ["--n-filters", "2", "--set", "patch=[16,16,16]", "--set", "stride=[8,8,8]", "--device", "cpu",
        "--threads", "1"]


def _write_own_dataset(root: Path) -> dict[str, list[str]]:
    """Five training cases (2 labelled: one HDF5, one NIfTI; 3 unlabelled: HDF5 without `label`, NIfTI without a
    label file, HDF5 with one) and two test cases, under names of the user's choosing."""
    world = VolumeConfig(shape=SHAPE)
    train = ["heart-A", "heart_b", "scan 3", "scan-4.nii", "scan5"]
    test = ["test-one", "test_two"]
    kinds = {"heart-A": "h5", "heart_b": "nifti", "scan 3": "h5-image-only", "scan-4.nii": "nifti-image-only",
             "scan5": "h5", "test-one": "nifti", "test_two": "h5"}
    for k, name in enumerate(train + test):
        image, label = generate_volume(np.random.default_rng([7, k]), world)
        kind = kinds[name]
        if kind.startswith("h5"):
            arrays = {"image": image} if kind.endswith("image-only") else {"image": image, "label": label}
            write_h5(root / name / "mri_norm2.h5", **arrays)
        else:
            write_nifti(root / name / "image.nii.gz", image, (1.0, 1.0, 1.0))
            if not kind.endswith("image-only"):
                write_nifti(root / name / "label.nii.gz", label, (1.0, 1.0, 1.0))
    (root / "train.list").write_text("\n".join(train) + "\n")
    (root / "test.list").write_text("\n".join(test) + "\n")
    return {"train": train, "test": test}


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "lowlabel", "dtc", *args], capture_output=True, text=True, env=env)


def _run_dir(out: Path) -> Path:
    (run,) = (out / "dtc").glob("*")
    return run


def test_end_to_end_on_own_files(tmp_path: Path) -> None:
    root = tmp_path / "my data"
    names = _write_own_dataset(root)
    out = tmp_path / "runs"
    done = _cli("train", "--data", str(root), "--labelled", "2", "--iterations", "3", *TINY, "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    run = _run_dir(out)
    summary = json.loads((run / "summary.json").read_text())
    assert [c["case"] for c in summary["test_cases"]] == names["test"]
    assert (summary["n_labelled"], summary["n_unlabelled"]) == (2, 3)
    assert len([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]) >= 1
    assert json.loads((run / "run.json").read_text())["data"] == str(root.resolve())
    ckpt = run / "checkpoints" / "step_00000003.pt"
    assert ckpt.is_file()

    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(ckpt), "--data", str(root), "--overlay", "test-one",
                                 "--out", str(tmp_path / "plots"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "test_two" in result.output and "mean" in result.output
    png = tmp_path / "plots" / "test-one_overlay.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = runner.invoke(app, ["segment", str(ckpt), str(root / "test-one" / "image.nii.gz"),
                                 str(root / "test_two" / "mri_norm2.h5"), "--out", str(tmp_path / "masks"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    mask, spacing = read_nifti(tmp_path / "masks" / "test-one_mask.nii.gz")
    assert mask.shape == SHAPE and spacing == (1.0, 1.0, 1.0) and set(np.unique(mask)) <= {0, 1}
    result = runner.invoke(app, ["segment", str(ckpt), str(root / "test_two" / "mri_norm2.h5"), "--format", "h5",
                                 "--out", str(tmp_path / "masks"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    h5 = read_h5_volume(tmp_path / "masks" / "test_two_mask.h5", keys=("label", "prob"))
    assert h5["label"].shape == SHAPE and np.array_equal(h5["label"], (h5["prob"] > 0.5) * h5["label"])
    assert not list(tmp_path.rglob("*.tmp*"))


def test_resume_keeps_the_recorded_data(tmp_path: Path) -> None:
    root = tmp_path / "own"
    names = _write_own_dataset(root)
    out = tmp_path / "runs"
    runner = CliRunner()
    first = runner.invoke(app, ["train", "--data", str(root), "--labelled", "2", "--iterations", "1", *TINY,
                                "--out", str(out)])
    assert first.exit_code == 0, first.output
    run = _run_dir(out)
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--set", "train.max_steps=2", "--device", "cpu",
                                  "--threads", "1"])
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((run / "summary.json").read_text())
    assert [c["case"] for c in summary["test_cases"]] == names["test"]  # not the built-in world's synth cases
    assert (run / "checkpoints" / "step_00000002.pt").is_file()
    record = json.loads((run / "run.json").read_text())
    assert record["data"] == str(root.resolve()) and len(record["resumed"]) == 1
    other = tmp_path / "other"
    _write_own_dataset(other)
    refused = runner.invoke(app, ["train", "--resume", str(run), "--data", str(other), "--device", "cpu"])
    # in-process the error surfaces as the exception; `lowlabel` prints its one line and exits 2
    assert isinstance(refused.exception, LowlabelError) and "--force" in str(refused.exception)


def test_config_precedence_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("labelled: 3\nn_filters: 3\nbeta: 0.5\ntrain:\n  max_steps: 9\n  seed: 5\n")
    result = CliRunner().invoke(app, [
        "train", "--config", str(tmp_path / "c.yaml"),
        "--labelled", "2",  # option over file
        "--iterations", "4", "--set", "train.max_steps=1",  # --set over option (and over file)
        "--set", "train.seed=8",  # --set over file
        "--n-filters", "2",  # option over file
        "--set", "patch=[16,16,16]", "--set", "synthetic.n_train=4", "--set", "synthetic.n_test=1",
        "--set", "synthetic.shape=[24,24,20]", "--out", str(tmp_path / "runs"), "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    cfg = load_config(recipe.Config, _run_dir(tmp_path / "runs") / "config.yaml")
    assert (cfg.labelled, cfg.n_filters, cfg.train.max_steps, cfg.train.seed) == (2, 2, 1, 8)
    assert cfg.beta == 0.5  # the file, not the default 0.3
    assert cfg.k == 1500.0 and cfg.stride == [18, 18, 4]  # defaults nobody set


def test_set_max_steps_gives_the_schedules_of_iterations() -> None:
    by_option = load_config(recipe.Config, None, [], options={"train.max_steps": 300})
    by_set = load_config(recipe.Config, None, ["train.max_steps=300"])
    assert by_option == by_set
    for cfg in (by_option, by_set):
        lr = [lr_factor(s, 300, cfg.optim) for s in range(300)]
        # official drops at 2500 and 5000 of 6000 iterations are steps 125 and 250 of 300
        assert lr == pytest.approx([1.0] * 125 + [0.1] * 125 + [0.01] * 50)
        unit = recipe.ramp_unit(cfg, 300)
        assert unit == 8  # 150 x 300 / 6000 = 7.5, rounded
        ramp = [recipe.consistency_ramp(s, cfg.consistency, cfg.consistency_rampup, unit) for s in (0, 7, 8, 299)]
        assert ramp == pytest.approx([np.exp(-5.0), np.exp(-5.0), np.exp(-5 * (1 - 1 / 40) ** 2),
                                      np.exp(-5 * (1 - 37 / 40) ** 2)])


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)["model"]


def test_kill_and_resume_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    steps = 40
    args = ["--iterations", str(steps), "--labelled", "2", *TINY, "--set", "train.checkpoint_every=1",
            "--set", "synthetic.n_train=4", "--set", "synthetic.n_test=1", "--set", "synthetic.shape=[24,24,20]"]
    killed_out = tmp_path / "killed"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "lowlabel", "dtc", "train", *args, "--out", str(killed_out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not list(killed_out.glob("dtc/*/checkpoints/step_0000000[3-9].pt")) and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = _run_dir(killed_out)
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"
    assert list(run.glob("checkpoints/*.pt"))
    resumed = _cli("train", "--resume", str(run), "--threads", "1", "--device", "cpu")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    whole = CliRunner().invoke(app, ["train", *args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    got, want = _weights(run, steps), _weights(_run_dir(tmp_path / "whole"), steps)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_bad_test_case_stops_training_before_it_starts(tmp_path: Path) -> None:
    root = tmp_path / "own"
    _write_own_dataset(root)
    (root / "test_two" / "mri_norm2.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)  # truncated HDF5
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", "--data", str(root), "--labelled", "2", "--iterations", "50", *TINY,
                                      "--out", str(out)])
    assert isinstance(result.exception, LowlabelError) and "test_two" in str(result.exception)
    assert not out.exists() or not list(out.rglob("*"))  # no run folder, no metrics, no checkpoint left
