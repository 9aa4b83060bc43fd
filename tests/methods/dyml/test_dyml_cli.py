"""`lowlabel dyml ...` through typer's CliRunner: metrics on files the test writes, embed from a tiny run, compare,
and the error paths; the module imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lowlabel.methods.dyml.cli import app
from lowlabel.methods.dyml.evaluation import retrieval_per_scale

runner = CliRunner()


def test_cli_module_does_not_import_torch() -> None:
    code = "import sys; import lowlabel.methods.dyml.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_metrics_on_files_match_the_library(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.stack([np.arange(30) // 3, np.arange(30) // 10, np.arange(30) // 15], 1)
    emb = rng.normal(size=(30, 8)).astype(np.float32) + labels[:, :1]
    np.save(tmp_path / "emb.npy", emb)
    np.savetxt(tmp_path / "labels.csv", labels, delimiter=",", fmt="%d")
    result = runner.invoke(app, ["metrics", str(tmp_path / "emb.npy"), str(tmp_path / "labels.csv"), "--json",
                                 str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "m.json").read_text())
    want = retrieval_per_scale(torch.from_numpy(emb), torch.from_numpy(labels))
    assert got.keys() == want.keys() and got["coarse"]["asi"] == pytest.approx(want["coarse"]["asi"])
    assert "overall" in result.output


def test_metrics_errors_are_one_line(tmp_path: Path) -> None:
    np.save(tmp_path / "emb.npy", np.zeros((4, 3), dtype=np.float32))
    np.save(tmp_path / "labels.npy", np.zeros((5, 3), dtype=np.int64))
    result = runner.invoke(app, ["metrics", str(tmp_path / "emb.npy"), str(tmp_path / "labels.npy")])
    assert result.exit_code != 0 and "same N" in str(result.exception)
    result = runner.invoke(app, ["metrics", str(tmp_path / "missing.npy"), str(tmp_path / "labels.npy")])
    assert "not found" in str(result.exception)
    result = runner.invoke(app, ["metrics", str(tmp_path / "emb.npy"), str(tmp_path / "labels.npy"), "--queries",
                                 str(tmp_path / "emb.npy")])
    assert "together" in str(result.exception)


def test_compare_then_embed_and_score(tmp_path: Path) -> None:
    from PIL import Image

    rows = ["path,fine,middle,coarse"]
    rng = np.random.default_rng(0)
    for fine in range(8):
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / f"i{fine}_{k}.png")
            rows.append(f"i{fine}_{k}.png,f{fine},m{fine // 2},{'ab'[fine // 4]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    tiny = ["--set", "model.backbone=convnet", "--set", "model.width=4", "--set", "model.conv_blocks=2", "--set",
            "model.dim=8", "--set", "data.image_size=16", "--set", "data.test_resize=16", "--set",
            "data.m_per_class=2", "--set", "data.classes_per_batch=2", "--set", "data.holdout=0.5", "--set",
            "train.max_steps=2", "--set", "train.checkpoint_every=2"]
    result = runner.invoke(app, ["compare", "--data", str(tmp_path / "labels.csv"), "--seed", "0", "--seed", "1",
                                 "--loss", "csl", "--out", str(tmp_path / "runs"), "--json",
                                 str(tmp_path / "cmp.json"), "--device", "cpu", *tiny])
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "cmp.json").read_text())
    assert set(got["mean"]) == {"csl"} and len(got["per_seed"]["csl"]) == 2
    assert "overall_asi_std" in got["mean"]["csl"]
    ckpt = tmp_path / "runs" / "csl" / "seed0" / "checkpoints" / "step_00000002.pt"
    result = runner.invoke(app, ["embed", str(ckpt), str(tmp_path / "labels.csv"), "--out", str(tmp_path / "e.npy"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (24, 8) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    result = runner.invoke(app, ["metrics", str(tmp_path / "e.npy"), str(tmp_path / "e_labels.npy")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["compare", "--data", str(tmp_path / "nothing.txt"), "--device", "cpu"])
    assert result.exit_code != 0 and "--data" in str(result.exception)
