"""FDRL recipe and CLI: official defaults, the contract, gradients of every head, a tiny run with its figures,
kill-and-resume, and the CLI on a class-folder dataset the test writes (train, eval, predict, errors)."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fdrl_helpers import write_class_folders
from typer.testing import CliRunner

from lowlabel.engine import runtime as rt
from lowlabel.engine.recipe import contract_problems
from lowlabel.errors import LowlabelError
from lowlabel.methods.fdrl import data as fdata
from lowlabel.methods.fdrl import recipe
from lowlabel.methods.fdrl.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(steps: int, head: str = "fdrl", **changes: object) -> recipe.Config:
    cfg = recipe.Config(width=4, image_size=32, head=head, num_latent=3, latent_dim=8, batch_size=8,
                        world=recipe.WorldConfig(train_identities=4, test_identities=2, images_per_identity=6, size=32))
    train = dataclasses.replace(cfg.train, max_steps=steps, epochs=0, log_every=1, seed=0)
    optim = dataclasses.replace(cfg.optim, lr=1e-3, schedule="constant")
    return dataclasses.replace(cfg, train=train, optim=optim, **changes)


def test_official_defaults() -> None:
    cfg = recipe.Config()
    o = cfg.optim
    assert (o.name, o.lr, o.betas, o.schedule, o.gamma) == ("adam", 1e-4, [0.5, 0.999], "step", 0.1)
    assert [round(m * 40) for m in o.milestones] == [10, 18, 25, 32] and cfg.train.epochs == 40
    assert (cfg.backbone, cfg.width, cfg.image_size, cfg.batch_size, cfg.flip) == ("resnet18", 64, 224, 64, True)
    assert (cfg.num_latent, cfg.latent_dim, cfg.relation, cfg.delta, cfg.skip) == (9, 128, "tanh_distance", 0.5,
                                                                                   "intra")
    assert (cfg.lambda_c, cfg.lambda_b, cfg.lambda_d, cfg.balance) == (1e-4, 1.0, 1e-4, "normalised")
    assert cfg.head == "fdrl" and cfg.epn_init_scale == 1.0


def test_contract() -> None:
    assert contract_problems("fdrl") == []


@pytest.mark.parametrize("head", recipe.HEADS)
def test_every_parameter_of_every_head_gets_a_gradient(head: str) -> None:
    cfg = _tiny(1, head)
    world = fdata.faces_world(2, 4, seed=0, size=32)
    torch.manual_seed(0)
    model = recipe.build_model(cfg)
    losses = recipe.make_step_fn(cfg)(model, (world["images"], world["labels"]), 0)
    expected = {"fdrl": {"cls", "compactness", "balance", "distribution"}, "linear": {"cls"},
                "centre": {"cls", "centre"}, "mlp": {"cls"}}[head]
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if head in ("fdrl", "centre"):
        assert model.head.class_centres.grad.abs().sum() > 0


def test_mlp_baseline_matches_the_fdrl_head_in_size_and_depth() -> None:
    heads = {head: recipe.build_model(recipe.Config(width=16, latent_dim=32, head=head)).head
             for head in ("fdrl", "mlp")}
    sizes = {head: sum(p.numel() for p in h.parameters()) for head, h in heads.items()}
    assert abs(sizes["mlp"] - sizes["fdrl"]) < 0.01 * sizes["fdrl"]
    assert sum(isinstance(m, torch.nn.Linear) for m in heads["mlp"].modules()) == 4  # three hidden + classifier
    fixed = recipe.build_model(recipe.Config(width=4, head="mlp", mlp_hidden=10, mlp_layers=2)).head
    assert [m.out_features for m in fixed.modules() if isinstance(m, torch.nn.Linear)] == [10, 10, 7]


def test_epn_init_scale_shrinks_the_initial_logits() -> None:
    x = torch.rand(16, 32)
    torch.manual_seed(0)
    default = recipe.build_model(_tiny(1, backbone="dlib")).head
    torch.manual_seed(0)
    scaled = recipe.build_model(_tiny(1, backbone="dlib", epn_init_scale=0.01)).head
    x = torch.rand(16, recipe.DLIB_DIM)
    assert scaled(x).logits.abs().max() < 0.02 * default(x).logits.abs().max() + 1e-6


def test_tiny_run_writes_summary_and_figures(tmp_path: Path) -> None:
    summary = recipe.train(_tiny(3), data=None, run_dir=tmp_path, runtime=rt.init("cpu", seed=0), resume=False)
    test = summary["test"]
    assert 0.0 <= test["accuracy"] <= 1.0 and np.asarray(test["confusion"]).sum() == summary["n_test"] == 12
    weights = np.asarray(test["mean_weights"])
    assert weights.shape[1] == 3
    present = ~np.isnan(weights).any(1)
    np.testing.assert_allclose(weights[present].sum(1), 1.0, rtol=1e-5)
    assert {p.name for p in tmp_path.glob("*.png")} == {"confusion.png", "branch_weights.png"}
    saved = (tmp_path / "config.yaml").read_text()
    assert "num_classes: 7" in saved and "- neutral" in saved
    from lowlabel.methods.fdrl import demo

    assert {p.name for p in demo.figures(tmp_path)} == {"confusion.png", "branch_weights.png"}


def test_kill_and_resume_gives_the_same_weights(tmp_path: Path) -> None:
    runtime = rt.init("cpu", seed=0)
    cfg = _tiny(6)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, checkpoint_every=3))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    recipe.train(cfg, data=None, run_dir=straight, runtime=runtime, resume=False)
    shutil.copytree(straight, resumed)
    (resumed / "checkpoints" / "step_00000006.pt").unlink()  # killed after the checkpoint of step 3
    summary = recipe.train(cfg, data=None, run_dir=resumed, runtime=runtime, resume=True)
    assert summary["resumed_from"].endswith("step_00000003.pt")
    a = torch.load(straight / "checkpoints" / "step_00000006.pt", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoints" / "step_00000006.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_eval_predict(tmp_path: Path) -> None:
    root = write_class_folders(tmp_path / "faces")
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--data", str(root), "--image-size", "32", "--set", "width=4",
                                 "--set", "train.max_steps=2", "--set", "batch_size=4", "--set", "latent_dim=4",
                                 "--out", str(tmp_path / "runs"), "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    ckpt = sorted((tmp_path / "runs").glob("fdrl/*/checkpoints/*.pt"))[-1]
    summary = json.loads((ckpt.parent.parent / "summary.json").read_text())
    assert summary["test"]["classes"] == ["happy", "neutral", "surprise"] and summary["n_test"] == 6
    result = runner.invoke(app, ["eval", str(ckpt), "--data", str(root), "--out", str(tmp_path / "figs"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and (tmp_path / "figs" / "branch_weights.png").is_file()
    images = sorted((root / "test").glob("*/*.png"))
    result = runner.invoke(app, ["predict", str(ckpt), *map(str, images), "--out", str(tmp_path / "p.csv"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert len(rows) == 6 and {r["expression"] for r in rows} <= {"happy", "neutral", "surprise"}
    weights = np.array([[float(r[f"weight_l{j}"]) for j in range(1, 10)] for r in rows])
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-4)


def test_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "nowhere"), "--device", "cpu"])
    assert isinstance(result.exception, LowlabelError) and "does not exist" in str(result.exception)
    result = runner.invoke(app, ["train", "--backbone", "vgg", "--device", "cpu"])
    assert isinstance(result.exception, LowlabelError) and "backbone" in str(result.exception)
    result = runner.invoke(app, ["predict", str(tmp_path / "missing.pt"), str(tmp_path / "x.png")])
    assert isinstance(result.exception, LowlabelError) and "x.png" in str(result.exception)
    (tmp_path / "x.png").write_bytes(b"")
    result = runner.invoke(app, ["eval", str(tmp_path / "missing.pt")])
    assert isinstance(result.exception, LowlabelError) and "checkpoint not found" in str(result.exception)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LowlabelError, match="not a dataset layout"):
        fdata.layout(tmp_path / "empty")


def test_layouts_and_subset(tmp_path: Path) -> None:
    root = write_class_folders(tmp_path / "faces")
    assert fdata.layout(root) == "folders"
    train = fdata.read_split(root, "train")
    assert train.classes == ("happy", "neutral", "surprise")
    keep = fdata.subset_per_class(train.labels, 2, seed=0)
    assert np.bincount(train.labels[keep]).tolist() == [2, 2, 2] and len(train) == 18
    np.testing.assert_array_equal(keep, fdata.subset_per_class(train.labels, 2, seed=0))
    with open(root / "train.csv", "w") as fh:
        fh.writelines(f"{p},{train.classes[y]}\n" for p, y in zip(train.paths, train.labels, strict=True))
    shutil.copy(root / "train.csv", root / "test.csv")
    assert fdata.layout(root) == "csv" and fdata.read_split(root, "test").classes == train.classes
    u8 = fdata.load_image_bytes(train.paths[:2], 16)
    assert u8.dtype == torch.uint8 and u8.shape == (2, 3, 16, 16)
