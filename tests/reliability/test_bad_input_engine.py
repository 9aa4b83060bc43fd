"""Bad input to the shared pieces: config files, run records, resume folders, the main CLI's train."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sweep_harness import expect_clear_error, expect_cli_error

from lowlabel.engine.config import load_config
from lowlabel.engine.recipe import TrainConfig
from lowlabel.files import read_json


def _config_schema() -> type:
    from dataclasses import dataclass, field

    @dataclass
    class Cfg:
        lr: float = 0.1
        train: TrainConfig = field(default_factory=TrainConfig)

    return Cfg


@given(st.binary(max_size=200))
def test_config_file_of_any_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("cfg") / "my config.yaml"
    path.write_bytes(content)
    expect_clear_error("engine: config file", lambda: load_config(_config_schema(), path), path, valid_ok=True)


@given(st.binary(max_size=80).filter(lambda b: not b.strip().startswith(b"{")))
def test_run_record_corrupt(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("rec") / "run.json"
    path.write_bytes(content)
    expect_clear_error("engine: run.json", lambda: read_json(path, "run record"), path, valid_ok=True)


@given(st.sampled_from(["missing-run", "not-a-run"]))
def test_train_resume_of_nothing(tmp_path_factory, name):
    root = tmp_path_factory.mktemp("runs")
    (root / "not-a-run").mkdir()
    expect_cli_error("cli: train --resume", ["train", "completer", "--resume", str(root / name), "--device", "cpu"],
                     name)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12))
def test_train_on_missing_data(tmp_path_factory, name):
    root = tmp_path_factory.mktemp("runs")
    missing = root / f"missing-{name.replace('/', '_').replace(chr(0), '_')}"
    expect_cli_error("cli: train --data missing", ["train", "completer", "--data", str(missing), "--out", str(root),
                                                   "--device", "cpu"], "does not exist", run_root=root)


def test_unknown_config_key_through_the_cli(tmp_path):
    expect_cli_error("cli: train --set unknown", ["train", "completer", "--set", "nope=1", "--out", str(tmp_path),
                                                  "--device", "cpu"], "nope", run_root=tmp_path)
    assert not any(Path(tmp_path).iterdir())
