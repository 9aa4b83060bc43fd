"""ACR recipe, batch source, views and CLI on tiny runs (seconds): contract, smoke step, frozen source, resume."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine.recipe import TrainConfig, contract_problems
from lowlabel.engine.runtime import init
from lowlabel.errors import LowlabelError
from lowlabel.methods.acr import augment, recipe
from lowlabel.methods.acr.cli import app
from lowlabel.methods.acr.data import TwoStreams, held_out_split

runner = CliRunner()


def tiny(steps: int = 4, **kw: object) -> recipe.Config:
    """Width-4 ResNet on 16 px shapes; a 2-step source model; ARC switched on from the first steps."""
    synthetic = recipe.SyntheticConfig(size=16, n_source=64, source_steps=2, n_train=45, n_test=18)
    cfg = recipe.Config(resnet_layers=[1, 1, 1, 1], bottleneck=False, width=4, small_stem=True, image_size=16,
                        resize=18, labelled_per_class=1, labelled_bs=6, unlabelled_bs=6, steps_per_epoch=3,
                        akc_gate_classes=0, mmd_threshold=1.0, arc_start=-1, arc_min_rows=0, reg_warmup=1,
                        synthetic=synthetic,
                        train=TrainConfig(max_steps=steps, log_every=1, checkpoint_every=2, seed=3))
    return dataclasses.replace(cfg, **kw)


def test_contract() -> None:
    assert contract_problems("acr") == []


def test_official_defaults() -> None:
    cfg = recipe.Config()
    assert (cfg.labelled_bs, cfg.unlabelled_bs, cfg.steps_per_epoch, cfg.train.max_steps) == (64, 64, 100, 10_000)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay) == (
        "sgd", 0.01, 0.9, True, 1e-4)
    assert (cfg.lambda_arc, cfg.kd_threshold, cfg.mmd_threshold, cfg.table_size) == (50.0, 0.7, 0.7, 128)
    assert (cfg.akc_gate_classes, cfg.akc_scale, cfg.arc_start, cfg.arc_min_rows, cfg.reg_warmup) == (
        1000, 10000.0, 10, 20, 100)
    assert (cfg.fixmatch_threshold, cfg.fixmatch_coef, cfg.ict_coef, cfg.ict_alpha, cfg.ema_factor) == (
        0.95, 0.5, 500.0, 0.75, 0.999)
    assert (cfg.image_size, cfg.resize, cfg.resnet_layers, cfg.bottleneck, cfg.imprint) == (
        224, 256, [3, 4, 6, 3], True, True)


def test_smoke_step_reaches_every_loss_and_only_the_student() -> None:
    case = recipe.smoke_case(init("cpu"))
    losses, _ = case.step_fn(case.model, case.batch, 5)
    assert set(losses) == {"ce", "ssl", "akc", "arc"}
    assert all(torch.isfinite(v) for v in losses.values()) and float(losses["arc"].detach()) > 0
    sum(losses.values()).backward()
    for name, p in case.model.named_parameters():
        frozen = name.startswith(case.frozen_prefixes)
        assert (p.grad is None) == frozen or (frozen and p.grad is None), name


@pytest.mark.parametrize("ssl", ["fixmatch", "ict"])
def test_training_leaves_the_source_model_unchanged_and_resumes_bit_identical(tmp_path: Path, ssl: str) -> None:
    runtime = init("cpu")
    cfg = tiny(ssl=ssl)
    model, summary = recipe.train_model(cfg, data=None, run_dir=tmp_path / "a", runtime=runtime, resume=False)
    source_file = torch.load(tmp_path / "a" / "source.pt", weights_only=True)
    for k, v in model.source.backbone.state_dict().items():
        assert torch.equal(v, source_file[k]), k
    assert not torch.equal(model.student.backbone.conv1.weight, source_file["conv1.weight"])
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["n_labelled"] == 9
    # a kill after step 2: the step-4 checkpoint never written; resuming gives the same weights
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ckpt.checkpoint_path(tmp_path / "b", 4).unlink()
    resumed, _ = recipe.train_model(cfg, data=None, run_dir=tmp_path / "b", runtime=runtime, resume=True)
    for (k, v), w in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    # the EMA teacher (ICT: BatchNorm statistics averaged too) trails the student, and the ssl term was trained
    teacher, student = model.teacher.module.state_dict(), model.student.state_dict()
    assert not torch.equal(teacher["backbone.conv1.weight"], student["backbone.conv1.weight"])
    averaged = not torch.equal(teacher["backbone.bn1.running_mean"], student["backbone.bn1.running_mean"])
    assert averaged == (ssl == "ict")
    logged = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    ssl_terms = [row["ssl"] for row in logged if "ssl" in row]
    assert len(ssl_terms) == 4 and all(math.isfinite(v) and v >= 0 for v in ssl_terms)
    assert (max(ssl_terms) > 0) == (ssl == "ict")  # FixMatch's 0.95 gate passes nothing this early; ICT's MSE does


def test_evaluate_matches_the_summary(tmp_path: Path) -> None:
    runtime = init("cpu")
    cfg = tiny(steps=2, lambda_akc=0.0)
    _, summary = recipe.train_model(cfg, data=None, run_dir=tmp_path, runtime=runtime, resume=False)
    from lowlabel.engine.config import load_config

    resolved = load_config(recipe.Config, tmp_path / "resolved.yaml")
    found = recipe.evaluate(resolved, checkpoint=ckpt.newest_checkpoint(tmp_path), data=None, runtime=runtime)
    assert found["accuracy"] == pytest.approx(summary["test_accuracy"])


def test_two_streams_resume_mid_epoch_and_cycle_permutations() -> None:
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    streams = TwoStreams(x[:4], torch.arange(4), x, labelled_bs=3, unlabelled_bs=4, steps_per_epoch=5, seed=7)
    full = list(streams.epoch(2))
    tail = list(streams.epoch(2, start=3))
    for a, b in zip(full[3:], tail, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    labelled = torch.cat([torch.cat([b[1] for b in streams.epoch(e)]) for e in range(2)])  # 30 draws of 4 images
    assert sorted(labelled[:28].tolist()) == sorted(list(range(4)) * 7)  # every image once per pass


def test_two_streams_give_each_rank_its_slice_of_the_global_batch() -> None:
    x = torch.arange(11, dtype=torch.uint8).view(11, 1, 1, 1).expand(11, 3, 2, 2).contiguous()
    y = torch.arange(5)
    single = TwoStreams(x[:5], y, x, labelled_bs=4, unlabelled_bs=6, steps_per_epoch=4, seed=2)
    ranks = [TwoStreams(x[:5], y, x, labelled_bs=2, unlabelled_bs=3, steps_per_epoch=4, seed=2, rank=r,
                        world_size=2) for r in range(2)]
    for epoch in (0, 1):
        for whole, *parts in zip(single.epoch(epoch), *(r.epoch(epoch) for r in ranks), strict=True):
            for k in range(3):  # x_l, y_l, x_u: rank 0's rows then rank 1's rows = the one-process batch
                assert torch.equal(torch.cat([p[k] for p in parts]), whole[k])


def test_views_shapes_and_determinism() -> None:
    x = torch.randint(0, 256, (5, 3, 18, 18), dtype=torch.uint8)
    torch.manual_seed(0)
    a = augment.strong(x, 16)
    torch.manual_seed(0)
    b = augment.strong(x, 16)
    assert a.shape == (5, 3, 16, 16) and torch.equal(a, b)
    raw = augment.random_crop_flip(x, 18)  # full-size crop: the image or its mirror
    for i in range(5):
        assert torch.equal(raw[i], x[i].float() / 255) or torch.equal(raw[i], x[i].flip(-1).float() / 255)
    with pytest.raises(LowlabelError, match="smaller than the crop"):
        augment.weak(x, 20)


def test_held_out_split_and_errors() -> None:
    labels = np.repeat(np.arange(3), 4)
    train, test = held_out_split(labels, 1)
    assert test.tolist() == [3, 7, 11] and len(train) == 9
    with pytest.raises(LowlabelError, match="leaves none"):
        held_out_split(labels, 4)


def test_config_errors() -> None:
    with pytest.raises(LowlabelError, match="ssl="):
        recipe.check(recipe.Config(ssl="mixmatch"))
    with pytest.raises(LowlabelError, match="num_classes"):
        recipe.build_model(recipe.Config())
    with pytest.raises(LowlabelError, match="no source model"):
        recipe.resolve_source(recipe.Config(), Path("/nonexistent"), Path("/tmp"), init("cpu"))


def _folders(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(colour) + rng.integers(-20, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / f"class{c}" / f"{i}.png")


def test_cli_train_eval_predict_on_folders(tmp_path: Path) -> None:
    _folders(tmp_path / "data")
    runtime = init("cpu")
    # a user's source model: the tiny shapes source model, as a torchvision-format file
    from lowlabel.methods.acr import source

    src = source.pretrain_shapes(tmp_path / "src.pt", layers=[1, 1, 1, 1], width=4, small_stem=True, crop=16,
                                 size=16, side=18, n=32, steps=1, lr=0.01, seed=0, runtime=runtime)
    args = ["train", "--data", str(tmp_path / "data"), "--source", str(src), "--labelled-per-class", "2",
            "--image-size", "16", "--iterations", "2", "--out", str(tmp_path / "runs"), "--device", "cpu",
            "--set", "labelled_bs=4", "--set", "unlabelled_bs=4", "--set", "akc_gate_classes=0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "runs").glob("acr/*"))
    assert (run / "labelled.txt").read_text().count("\n") == 4
    result = runner.invoke(app, ["eval", str(run), "--data", str(tmp_path / "data"), "--device", "cpu"])
    assert result.exit_code == 0 and "accuracy" in result.output, result.output
    images = sorted((tmp_path / "data" / "test").rglob("*.png"))
    result = runner.invoke(app, ["predict", str(run), *map(str, images), "--out", str(tmp_path / "p.csv"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.csv").read_text().count("class") >= 2
    result = runner.invoke(app, ["eval", str(tmp_path), "--device", "cpu"])
    assert result.exit_code != 0 and "resolved.yaml" in str(result.exception)
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "data"), "--device", "cpu", "--out",
                                 str(tmp_path / "runs2")])
    assert result.exit_code != 0 and "no source model" in str(result.exception)
    result = runner.invoke(app, ["train", "--ssl", "mixmatch", "--device", "cpu", "--out", str(tmp_path / "r3")])
    assert result.exit_code != 0 and "ssl=" in str(result.exception)


def test_demo_figure_from_metrics_files(tmp_path: Path) -> None:
    import json

    from lowlabel.methods.acr import demo

    assert demo.figures(tmp_path) == []
    for variant in ("fine-tune", "fine-tune_AKC_ARC"):
        folder = tmp_path / variant / "seed1"
        folder.mkdir(parents=True)
        rows = [({"step": s, "loss": 1.0}, {"step": s, "eval/accuracy": s / 100}) for s in (20, 40)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for pair in rows for r in pair))
    assert demo.accuracy_curves(tmp_path)["fine-tune"]["seed1"] == [(20, 0.2), (40, 0.4)]
    [png] = demo.figures(tmp_path)
    assert png.name == "acr_accuracy.png" and png.stat().st_size > 1000
