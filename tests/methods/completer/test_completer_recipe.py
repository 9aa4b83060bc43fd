"""COMPLETER end to end: a quick run on the digits world beats zero-fill k-means, 3 views, bad inputs, the CLI,
train/evaluate round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from typer.testing import CliRunner

from lowlabel.engine import runtime as rt
from lowlabel.engine.trainer import TrainConfig
from lowlabel.errors import LowlabelError
from lowlabel.methods.completer import recipe
from lowlabel.methods.completer.cli import app, parse_rates
from lowlabel.methods.completer.data import MultiView, digits_world
from lowlabel.methods.completer.fit import check_mask, fit_and_cluster
from lowlabel.methods.completer.model import Completer
from lowlabel.methods.completer.sweep import summarise


def small_config(epochs: int) -> recipe.Config:
    return recipe.Config(
        epochs=epochs, lr=1e-3, batch_size=128, eval_every_epochs=0, kmeans_n_init=3,
        model=recipe.ModelConfig(d_z=32, hidden=[128, 128], predictor_hidden=[32, 64]),
        loss=recipe.LossConfig(prediction_start_epoch=epochs // 3),
        train=TrainConfig(max_steps=0, log_every=10_000, amp=False, seed=0),
    )


def test_quick_training_on_digits_beats_zero_fill_kmeans() -> None:
    # the demo preset shortened to 30 epochs (prediction from epoch 10): about 10 s of one CPU core
    torch.set_num_threads(1)
    runtime = rt.init("cpu", seed=0)
    data = digits_world(seed=0)
    mask = recipe.make_mask(1797, 2, 0.5, seed=1)
    cfg = recipe.demo_config(quick=True)
    cfg.epochs, cfg.loss.prediction_start_epoch, cfg.kmeans_n_init = 30, 10, 3
    result = recipe.run_once(cfg, data, mask, runtime=runtime)
    base = recipe.baselines(data, mask, n_init=3)
    assert result["n_complete"] == 1797 - 899  # round half up of 0.5 * 1797
    assert result["embedding"].shape == (1797, 64)
    assert result["scores"]["acc"] > base["kmeans_zero_fill"]["acc"] + 0.1, (result["scores"], base)
    assert result["scores"]["nmi"] > base["kmeans_zero_fill"]["nmi"] + 0.1, (result["scores"], base)


def test_three_views_train_and_impute() -> None:
    runtime = rt.init("cpu", seed=0)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    centres = rng.normal(0, 3, (3, 6))
    views = [np.abs(centres[labels][:, :d] + rng.normal(0, 0.5, (120, d))).astype(np.float32) for d in (4, 5, 6)]
    mask = recipe.make_mask(120, 3, 0.5, seed=2)
    assert (mask.sum(axis=1) < 3).sum() == 60
    model = Completer(view_dims=[4, 5, 6], d_z=8, hidden=[16], predictor_hidden=[16])
    result = fit_and_cluster(views, labels, mask, model=model, epochs=6, batch_size=32, lr=1e-3, alpha=9.0,
                             lambda_pre=0.1, lambda_rec=0.1, prediction_start_epoch=2, n_clusters=3, kmeans_n_init=2,
                             eval_every_epochs=3, train=TrainConfig(max_steps=0, log_every=1000, amp=False),
                             runtime=runtime)
    assert result["embedding"].shape == (120, 24) and np.isfinite(result["embedding"]).all()
    assert [h["epoch"] for h in result["history"]] == [3, 6]
    assert set(result["summary"]["final_losses"]) == {"loss", "cl", "rec", "pre"}


def test_bad_inputs_are_clear_errors() -> None:
    runtime = rt.init("cpu", seed=0)
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(LowlabelError, match="missing"):
            recipe.make_mask(10, 2, rate, seed=0)
    with pytest.raises(LowlabelError, match="keep no view"):
        check_mask(np.array([[1, 0], [0, 0]]), 2, 2)
    with pytest.raises(LowlabelError, match="shape"):
        check_mask(np.ones((3, 2)), 2, 2)
    views = [np.ones((4, 2), np.float32), np.ones((4, 3), np.float32)]
    too_many = MultiView(views=views, labels=np.arange(4), name="toy")
    kwargs = {"model": Completer(view_dims=[2, 3], d_z=2, hidden=[4], predictor_hidden=[4]), "epochs": 1,
              "batch_size": 4, "lr": 1e-3, "alpha": 9.0, "lambda_pre": 0.1, "lambda_rec": 0.1,
              "prediction_start_epoch": 0, "kmeans_n_init": 1, "eval_every_epochs": 0,
              "train": TrainConfig(max_steps=0), "runtime": runtime}
    with pytest.raises(LowlabelError, match="clusters"):
        fit_and_cluster(views, too_many.labels, np.ones((4, 2)), n_clusters=5, **kwargs)
    with pytest.raises(LowlabelError, match="every view"):
        fit_and_cluster(views, None, np.array([[1, 0], [0, 1], [1, 0], [1, 1]]), n_clusters=2, **kwargs)
    with pytest.raises(LowlabelError, match="NaN"):
        fit_and_cluster([views[0], np.full((4, 3), np.nan, np.float32)], None, np.ones((4, 2)), n_clusters=2,
                        **kwargs)
    with pytest.raises(LowlabelError, match="disagree"):
        fit_and_cluster([views[0], np.ones((5, 3), np.float32)], None, np.ones((4, 2)), n_clusters=2, **kwargs)
    for text in ("0.5,1", "abc", ""):
        with pytest.raises(LowlabelError):
            parse_rates(text)
    assert parse_rates("0.1, 0.3") == [0.1, 0.3]


def test_train_then_evaluate_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = rt.init("cpu", seed=0)
    monkeypatch.setattr(recipe, "digits_world", lambda: digits_world(seed=0, n=200))
    cfg = small_config(3)
    summary = recipe.train(cfg, data=None, run_dir=tmp_path, runtime=runtime, resume=False)
    ckpts = sorted((tmp_path / "checkpoints").glob("step_*.pt"))
    assert ckpts and (tmp_path / "assignments.npy").is_file()
    again = recipe.evaluate(cfg, checkpoint=ckpts[-1], data=None, runtime=runtime)
    assert again == pytest.approx(summary["scores"])


def test_summary_is_mean_and_population_std() -> None:
    runs = [{"acc": 0.2, "nmi": 0.5, "ari": 0.1}, {"acc": 0.4, "nmi": 0.5, "ari": 0.3}]
    assert summarise(runs) == pytest.approx({"acc": 0.3, "acc_std": 0.1, "nmi": 0.5, "nmi_std": 0.0,
                                             "ari": 0.2, "ari_std": 0.1})


def test_cli_cluster_writes_results_and_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([1, 2], 20).reshape(-1, 1)
    cells = np.empty((1, 3), dtype=object)
    for i, d in enumerate((20, 59, 40)):
        cells[0, i] = rng.random((40, d)) + y
    sio.savemat(tmp_path / "Scene-15.mat", {"X": cells, "Y": y.astype(np.uint8)})
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["cluster", str(tmp_path / "Scene-15.mat"), "--missing-rate", "0.3,0.5",
                                   "--seeds", "1", "--epochs", "1", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    run_dir = next((out / "completer").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    assert [r["missing_rate"] for r in results["rates"]] == [0.3, 0.5]
    assert [r["runs"][0]["n_complete"] for r in results["rates"]] == [28, 20]
    assert results["rates"][1]["acc"] == results["rates"][1]["runs"][0]["acc"]
    assert (run_dir / "latents_tsne.png").is_file() and (run_dir / "sweep.png").is_file()
    assert "ACC" in res.output
