"""Run folders: what run.json records, how a resume reads it back, and that failed new runs leave nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from lowlabel.engine.recipe import TrainConfig
from lowlabel.engine.rundir import open_run, removed_on_error
from lowlabel.errors import LowlabelError


@dataclass
class Cfg:
    lr: float = 0.1
    width: int = 16
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=7))


def _open(tmp_path, **kwargs):
    return open_run(Cfg, "toy", out=tmp_path / "runs", device="cpu", **kwargs)


def test_new_run_records_slug_data_and_config(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    cfg, run, _ = _open(tmp_path, data=data, overrides=["lr=0.5"])
    record = json.loads((run.dir / "run.json").read_text())
    assert (record["slug"], record["data"], run.resumed, run.data) == ("toy", str(data.resolve()), False, data)
    assert "lr: 0.5" in (run.dir / "config.yaml").read_text() and cfg.lr == 0.5


def test_precedence_defaults_file_options_set(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("lr: 0.2\nwidth: 32\ntrain:\n  max_steps: 9\n")
    cfg, _, _ = _open(tmp_path, config=file, options={"width": 64, "lr": None, "train.max_steps": 11},
                      overrides=["train.max_steps=13"])
    # lr: file (the option was not given); width: option beats file; max_steps: --set beats option and file
    assert (cfg.lr, cfg.width, cfg.train.max_steps) == (0.2, 64, 13)


def test_resume_reads_back_config_and_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _, first, _ = _open(tmp_path, data=data, overrides=["width=48"])
    cfg, run, _ = _open(tmp_path, resume=first.dir, overrides=["lr=0.3"])
    assert (run.dir, run.data, run.resumed) == (first.dir, data, True)
    assert (cfg.width, cfg.lr) == (48, 0.3)  # the run's own width survives; --set still applies
    record = json.loads((run.dir / "run.json").read_text())
    assert len(record["resumed"]) == 1 and record["data"] == str(data.resolve())


def test_resume_takes_the_newest_run_under_a_root(tmp_path):
    _open(tmp_path)
    _, second, _ = _open(tmp_path)
    _, run, _ = _open(tmp_path, resume=tmp_path / "runs")
    assert run.dir == second.dir


def test_resume_onto_other_data_needs_force(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _, first, _ = _open(tmp_path, data=a)
    with pytest.raises(LowlabelError, match="--force"):
        _open(tmp_path, resume=first.dir, data=b)
    _, run, _ = _open(tmp_path, resume=first.dir, data=b, force=True)
    assert run.data == b and json.loads((run.dir / "run.json").read_text())["data"] == str(b.resolve())
    _, built_in, _ = _open(tmp_path)  # a run on the built-in world refuses a --data too
    with pytest.raises(LowlabelError, match="built-in world"):
        _open(tmp_path, resume=built_in.dir, data=a)


def test_resume_refuses_another_config_file_and_missing_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _, first, _ = _open(tmp_path, data=data)
    with pytest.raises(LowlabelError, match="--set"):
        _open(tmp_path, resume=first.dir, config=first.dir / "config.yaml")
    data.rmdir()
    with pytest.raises(LowlabelError, match="no longer exists"):
        _open(tmp_path, resume=first.dir)
    with pytest.raises(LowlabelError, match="does not exist"):
        _open(tmp_path, data=tmp_path / "nowhere")


def test_resume_of_another_methods_run_is_refused(tmp_path):
    _, first, _ = _open(tmp_path)
    with pytest.raises(LowlabelError, match="toy run"):
        open_run(Cfg, "other", out=tmp_path, resume=first.dir, device="cpu")


def test_check_runs_before_any_folder_exists(tmp_path):
    def check(cfg: Cfg) -> None:
        raise LowlabelError(f"width {cfg.width} is odd")

    with pytest.raises(LowlabelError, match="odd"):
        _open(tmp_path, check=check)
    assert not (tmp_path / "runs").exists()


def test_failed_new_run_is_removed_but_checkpointed_or_resumed_runs_stay(tmp_path):
    _, run, _ = _open(tmp_path)
    with pytest.raises(LowlabelError), removed_on_error(run):
        raise LowlabelError("bad case file")
    assert not (tmp_path / "runs").exists()  # nor the empty OUT/slug folders it made
    _, run, _ = _open(tmp_path)
    (run.dir / "checkpoints").mkdir()
    (run.dir / "checkpoints" / "step_3.pt").write_bytes(b"x")
    with pytest.raises(KeyboardInterrupt), removed_on_error(run):
        raise KeyboardInterrupt
    assert run.dir.exists()
    _, resumed, _ = _open(tmp_path, resume=run.dir)
    (run.dir / "checkpoints" / "step_3.pt").unlink()
    with pytest.raises(LowlabelError), removed_on_error(resumed):
        raise LowlabelError("late failure")
    assert resumed.dir.exists()


def test_train_run_hands_the_recorded_data_to_the_recipe(tmp_path):
    from types import SimpleNamespace

    from lowlabel.engine.rundir import train_run

    calls = []

    def train(cfg, *, data, run_dir, runtime, resume):
        calls.append((data, resume))
        if data is None:
            raise LowlabelError("no data")
        return {"steps": cfg.train.max_steps}

    recipe = SimpleNamespace(Config=Cfg, train=train)
    data = tmp_path / "data"
    data.mkdir()
    summary, run = train_run(recipe, "toy", out=tmp_path / "runs", data=data, device="cpu")
    again, _ = train_run(recipe, "toy", out=tmp_path / "runs", resume=run.dir, device="cpu")
    assert summary == again == {"steps": 7} and calls == [(data, False), (data, True)]
    with pytest.raises(LowlabelError, match="no data"):
        train_run(recipe, "toy", out=tmp_path / "other", device="cpu")
    assert not (tmp_path / "other").exists()


def test_a_full_disk_while_recording_leaves_no_folder(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    def full(self: Path, *args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(LowlabelError, match=r"config\.yaml.*No space left"):
        _open(tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / "runs").exists()
