"""SGP recipe, loop and CLI on tiny runs: rounds and label files, kill-and-resume (between and inside rounds),
fragment folders, the CLI's jobs and error paths, the official defaults, the contract."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine import runtime as rt
from lowlabel.engine.recipe import contract_problems, lr_factor
from lowlabel.errors import LowlabelError
from lowlabel.methods.sgp import recipe
from lowlabel.methods.sgp.cli import app
from lowlabel.methods.sgp.labels import label_path, read_labels_3d

TINY = recipe.StudentConfig(channels=[4, 8, 8, 8], tr_channels=[8, 8, 8, 8], out_channels=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(steps: int = 2, meta_iters: int = 1, **kw: object) -> recipe.Config:
    cfg = recipe.Config(batch_pairs=2, num_pos=256, num_hn_samples=128, ransac_iter=300, meta_iters=meta_iters,
                        augment_angle=30.0, student=TINY, world=recipe.WorldConfig(n_train=4, n_test=2, n_points=1024,
                                                                                   max_angle=30.0), **kw)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, checkpoint_every=1, keep_checkpoints=2,
                                                             log_every=1))
    return recipe.with_steps(cfg, steps)


def _weights(run_dir: Path, round_name: str) -> dict[str, torch.Tensor]:
    return ckpt.load(ckpt.newest_checkpoint(run_dir / "rounds" / round_name))["model"]


def test_contract() -> None:
    assert contract_problems("sgp") == []


def test_official_defaults() -> None:
    cfg = recipe.Config()
    assert (cfg.voxel_size, cfg.positive_radius, cfg.batch_pairs, cfg.num_pos, cfg.num_hn_samples) == (
        0.05, 2.0, 8, 4096, 1024)
    assert (cfg.pos_margin, cfg.neg_margin, cfg.augment_angle, cfg.meta_iters, cfg.finetune) == (
        0.1, 1.4, 360.0, 2, False)
    assert (cfg.min_confidence, cfg.ransac_iter, cfg.min_overlap, cfg.train.epochs) == (0.3, 10_000, 0.3, 100)
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.schedule, o.gamma) == ("sgd", 0.1, 0.8, 1e-4,
                                                                               "exponential", 0.99)
    assert lr_factor(20, 2000, o, steps_per_epoch=10) == pytest.approx(0.99**2)
    s = cfg.student
    assert (s.channels, s.tr_channels, s.out_channels, s.conv1_kernel_size, s.bn_momentum) == (
        [32, 64, 128, 256], [64, 64, 64, 128], 32, 5, 0.05)
    assert sum(p.numel() for p in recipe.build_model(cfg).parameters()) == pytest.approx(8.8e6, rel=0.02)


def test_loop_writes_rounds_labels_and_resumes_identically(tmp_path: Path) -> None:
    cfg = _tiny(min_confidence=0.0)  # every pair kept, so both rounds train (a 2-step student verifies none)
    runtime = rt.init("cpu", seed=0)
    summary = recipe.train(cfg, data=None, run_dir=tmp_path / "a", runtime=runtime, resume=False)
    assert [r["round"] for r in summary["rounds"]] == ["bs", "00"]
    assert [r["teacher"] for r in summary["rounds"]] == ["FPFH", "student bs"]
    for r in summary["rounds"]:
        assert r["pairs"] == 4 and r["steps"] == 2 and 0 <= r["test_recall"] <= 1 and len(r["test_rows"]) == 2
    labels = read_labels_3d(label_path(tmp_path / "a" / "labels", -1, recipe.WORLD_SCENE))
    assert [(lab.i, lab.j) for lab in labels] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert summary["rounds"][0]["verified"] == sum(lab.confidence >= cfg.min_confidence for lab in labels)
    final = _weights(tmp_path / "a", "00")

    # killed between rounds: round 00's labels and student gone
    recipe.train(cfg, data=None, run_dir=tmp_path / "b", runtime=runtime, resume=False)
    for sub in ("rounds/00", "labels/00"):
        for p in sorted((tmp_path / "b" / sub).rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
    again = recipe.train(cfg, data=None, run_dir=tmp_path / "b", runtime=runtime, resume=True)
    assert again["rounds"][1]["verified"] == summary["rounds"][1]["verified"]
    for k, v in _weights(tmp_path / "b", "00").items():
        torch.testing.assert_close(v, final[k], rtol=0, atol=0)

    # killed inside round 00, after its first step (its last checkpoint and summary gone)
    round_dir = tmp_path / "b" / "rounds" / "00"
    ckpt.newest_checkpoint(round_dir).unlink()
    (round_dir / "summary.json").unlink()
    assert ckpt.newest_checkpoint(round_dir).name == "step_00000001.pt"
    recipe.train(cfg, data=None, run_dir=tmp_path / "b", runtime=runtime, resume=True)
    for k, v in _weights(tmp_path / "b", "00").items():
        torch.testing.assert_close(v, final[k], rtol=0, atol=0)


def test_oracle_uses_the_true_poses(tmp_path: Path) -> None:
    summary = recipe.train(_tiny(1, supervised=True), data=None, run_dir=tmp_path, runtime=rt.init("cpu"),
                           resume=False)
    (only,) = summary["rounds"]
    assert only["teacher"] == "ground truth" and only["verified"] == 4 and only["label_precision"] == 1.0
    scores = recipe.evaluate(_tiny(1), checkpoint=ckpt.newest_checkpoint(tmp_path / "rounds" / "bs"), data=None,
                             runtime=rt.init("cpu"))
    assert set(scores) == {"recall", "rotation_error_median", "translation_error_median", "pairs"}
    assert scores["pairs"] == 2 and scores["recall"] == only["test_recall"]


def test_batches_are_deterministic_and_positives_true() -> None:
    cfg = _tiny()
    pairs = recipe.world_pairs(cfg.world, "train")
    items = [(p.source, p.target, p.T_gt) for p in pairs]
    source = recipe.PairBatches(items, cfg, seed=3)
    assert source.steps_per_epoch == 2
    a, b = list(source.epoch(1)), list(source.epoch(1, start=1))
    torch.testing.assert_close(a[1][0], b[0][0])
    coords, feats, n_src, pos = a[0]
    assert coords.shape[1] == 4 and len(feats) == len(coords) and 0 < n_src < len(coords)
    assert set(coords[:n_src, 0].tolist()) == {0, 1} and set(coords[n_src:, 0].tolist()) == {2, 3}
    assert pos[:, 0].max() < n_src and pos[:, 1].max() < len(coords) - n_src
    # without augmentation, positives of the first pair are within 2 voxels under the true transform
    plain = dataclasses.replace(cfg, augment_angle=0.0)
    coords, _, n_src, pos = recipe.make_batch(items[:1], plain, np.random.default_rng(0))
    src_pts = pairs[0].source[np.sort(recipe.teacher.voxel_select(pairs[0].source))]
    dst_pts = pairs[0].target[np.sort(recipe.teacher.voxel_select(pairs[0].target))]
    moved = src_pts @ pairs[0].T_gt[:3, :3].T + pairs[0].T_gt[:3, 3]
    dist = np.linalg.norm(moved[pos[:, 0].numpy()] - dst_pts[pos[:, 1].numpy()], axis=1)
    assert dist.max() <= 0.1 + 1e-9 and len(pos) > 50


def _fragment_folder(root: Path, cfg: recipe.Config) -> Path:
    """Two scenes of two fragments each from the world, with .info.txt poses (P_0 = I, P_1 = inv(T))."""
    for k, pair in enumerate(recipe.world_pairs(cfg.world, "train")[:2]):
        scene = root / f"scene{k}"
        scene.mkdir(parents=True)
        np.save(scene / "cloud_bin_0.npy", pair.source)
        np.save(scene / "cloud_bin_1.npy", pair.target)
        for i, P in ((0, np.eye(4)), (1, np.linalg.inv(pair.T_gt))):
            rows = "\n".join(" ".join(f"{v:.12g}" for v in row) for row in P)
            (scene / f"cloud_bin_{i}.info.txt").write_text(f"scene seq-01 {i} {i}\n{rows}\n")
    return root


def test_fragment_pairs_read_poses(tmp_path: Path) -> None:
    cfg = _tiny()
    root = _fragment_folder(tmp_path / "frags", cfg)
    pairs = recipe.fragment_pairs(root)
    truth = recipe.world_pairs(cfg.world, "train")[:2]
    assert [(p.scene, p.i, p.j) for p in pairs] == [("scene0", 0, 1), ("scene1", 0, 1)]
    for p, t in zip(pairs, truth, strict=True):
        np.testing.assert_allclose(p.T_gt, t.T_gt, atol=1e-9)
    with pytest.raises(LowlabelError, match="no cloud_bin"):
        recipe.fragment_pairs(tmp_path)
    (root / "scene1" / "overlaps.txt").write_text("cloud_bin_0.ply cloud_bin_1.ply 0.2\n")
    assert [(p.scene, p.i) for p in recipe.fragment_pairs(root)] == [("scene0", 0)]  # overlap 0.2 < 0.3


def test_cli_train_register_eval(tmp_path: Path) -> None:
    cfg = _tiny()
    root = _fragment_folder(tmp_path / "frags", cfg)
    runner = CliRunner()
    tiny = ["--set", "student.channels=[4,8,8,8]", "--set", "student.tr_channels=[8,8,8,8]",
            "--set", "student.out_channels=8", "--set", "batch_pairs=2", "--set", "ransac_iter=300",
            "--set", "num_pos=256", "--set", "num_hn_samples=128"]
    result = runner.invoke(app, ["train", "--data", str(root), "--rounds", "0", "--iterations", "1", *tiny,
                                 "--out", str(tmp_path / "runs"), "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs" / "sgp").glob("*"))
    assert (run_dir / "labels" / "bs" / "scene0" / "pseudo-label.log").is_file()
    model = ckpt.newest_checkpoint(run_dir / "rounds" / "bs")
    result = runner.invoke(app, ["eval", str(model), "--data", str(root), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "recall" in result.output and "scene1" in result.output
    truth = recipe.world_pairs(cfg.world, "train")[0].T_gt
    np.savetxt(tmp_path / "pose.txt", truth)
    result = runner.invoke(app, ["register", str(root / "scene0" / "cloud_bin_0.npy"),
                                 str(root / "scene0" / "cloud_bin_1.npy"), "--orient", "centroid", "--pose",
                                 str(tmp_path / "pose.txt"), "--output", str(tmp_path / "T.txt")])
    assert result.exit_code == 0, result.output
    assert "rotation error" in result.output and np.loadtxt(tmp_path / "T.txt").shape == (4, 4)
    result = runner.invoke(app, ["register", str(root / "scene0" / "cloud_bin_0.npy"),
                                 str(root / "scene0" / "cloud_bin_1.npy"), "--model", str(model), "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_cli_error_paths(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["register", str(tmp_path / "nope.ply"), str(tmp_path / "nope.ply")])
    assert isinstance(result.exception, LowlabelError) and "not found" in str(result.exception)
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((200, 3)))
    (tmp_path / "pose.txt").write_text("1 0 0\n0 1 0\n")
    result = runner.invoke(app, ["register", str(tmp_path / "a.npy"), str(tmp_path / "a.npy"), "--pose",
                                 str(tmp_path / "pose.txt")])
    assert isinstance(result.exception, LowlabelError) and "4x4" in str(result.exception)
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "runs")])
    assert isinstance(result.exception, LowlabelError) and "does not exist" in str(result.exception)
    result = runner.invoke(app, ["train", "--threads", "-1"])
    assert isinstance(result.exception, LowlabelError)


def test_no_verified_label_is_a_clear_error() -> None:
    with pytest.raises(LowlabelError, match="no verified pseudo-label"):
        recipe.PairBatches([], _tiny(), seed=0)


def test_smoke_case_one_step() -> None:
    case = recipe.smoke_case(rt.init("cpu", seed=0))
    out = case.step_fn(case.model, case.batch, 0)
    sum(out.values()).backward()
    assert all(torch.isfinite(v) for v in out.values())
    assert all(p.grad is not None for p in case.model.parameters())
