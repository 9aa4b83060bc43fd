"""SOHO CLI on a caption CSV the test writes: train, eval, rank, a training run killed with SIGKILL and resumed, and
the error paths (exit 2, one line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lowlabel.engine.config import save_config
from lowlabel.methods.soho.cli import app

pytest.importorskip("tokenizers")


def _write_csv(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["image,caption"]
    for i, colour in enumerate(("red", "green", "blue", "yellow")):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / f"img{i}.png")
        rows += [f"img{i}.png,a {colour} square", f'img{i}.png,"a {colour} thing, small"']
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def _tiny_yaml(path: Path) -> Path:
    from lowlabel.methods.soho import recipe

    return save_config(recipe.tiny_config(), path)


def test_train_eval_rank(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--data", str(csv), "--config", str(_tiny_yaml(tmp_path / "tiny.yaml")),
                                 "--iterations", "1", "--set", "data.images_per_batch=2",
                                 "--out", str(tmp_path / "runs"), "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    ckpt = sorted((tmp_path / "runs").glob("soho/*/checkpoints/*.pt"))[-1]
    result = runner.invoke(app, ["eval", str(ckpt), "--data", str(csv), "--captions", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "R@1" in result.output and "image -> text" in result.output
    result = runner.invoke(app, ["rank", str(ckpt), "a red square", "--data", str(csv), "--top", "2",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    ranks = [line.split("│")[1].strip() for line in result.output.splitlines() if line.startswith("│")]
    assert ranks == ["1", "2"]


def test_train_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path: Path, lowlabel_processes) -> None:
    procs, steps = lowlabel_processes, 40
    csv = _write_csv(tmp_path)
    args = ["--data", csv, "--config", _tiny_yaml(tmp_path / "tiny.yaml"), "--iterations", steps,
            "--set", "data.images_per_batch=2", "--set", "train.checkpoint_every=2", "--set",
            "train.keep_checkpoints=100", "--device", "cpu", "--threads", "1"]
    _, reference = procs.kill_and_resume(["soho", "train"], args, slug="soho", steps=steps, cwd=tmp_path)
    assert any(k.endswith("embed") for k in reference)  # the Visual Dictionary, a buffer, resumes too


def test_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["train", "--data", str(tmp_path / "none.json"), "--device", "cpu"])
    assert missing.exit_code != 0 and "file not found" in str(missing.exception)
    no_ckpt = runner.invoke(app, ["eval", str(tmp_path / "nope.pt"), "--device", "cpu"])
    assert "checkpoint not found" in str(no_ckpt.exception)
    (tmp_path / "bad.txt").write_text("x")
    csv = _write_csv(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"")
    bad_top = runner.invoke(app, ["rank", str(tmp_path / "model.pt"), "x", "--data", str(csv), "--top", "0"])
    assert "--top 0" in str(bad_top.exception)
    empty = runner.invoke(app, ["rank", str(tmp_path / "model.pt"), " ", "--data", str(csv)])
    assert "query is empty" in str(empty.exception)


def test_reader_errors(tmp_path: Path) -> None:
    from lowlabel.errors import LowlabelError
    from lowlabel.methods.soho.data import read_pairs

    (tmp_path / "pairs.txt").write_text("a,b\n")
    with pytest.raises(LowlabelError, match=r"\.json or a \.csv"):
        read_pairs(tmp_path / "pairs.txt")
    (tmp_path / "short.csv").write_text("image,caption\nimg.png\n")
    with pytest.raises(LowlabelError, match="line 2"):
        read_pairs(tmp_path / "short.csv")
