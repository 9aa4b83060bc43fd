"""SGP in 2D: the teacher-student loop on a tiny image world (rounds, official label files, resume between and
inside rounds), the pseudo-label layout round trip, the 2D verifier's boundaries through the task, label
correctness from F alone, the pose metrics and the student's batches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from lowlabel.data.synth.geometry import image_pair
from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine import runtime as rt
from lowlabel.errors import LowlabelError
from lowlabel.methods.sgp import teacher, two_view
from lowlabel.methods.sgp.labels import Label2D, label_path, read_labels_2d

pytest.importorskip("cv2")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(steps: int = 2, n_train: int = 4, **kw: object) -> two_view.Config2D:
    # width 12: the narrowest CAPS ResNet allowed (model.MIN_RESNET_WIDTH)
    world = two_view.ViewWorldConfig(n_train=n_train, n_test=1, seed=5, height=96, width=128, dot_cell=0.06)
    cfg = two_view.Config2D(num_queries=32, meta_iters=1, world=world,
                            student=two_view.CAPSConfig(backbone="resnet18", width=12, coarse_dim=8, fine_dim=8),
                            **kw)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, checkpoint_every=1, keep_checkpoints=2,
                                                             log_every=1))
    return two_view.with_steps(cfg, steps)


def _weights(run_dir: Path, round_name: str) -> dict[str, torch.Tensor]:
    return ckpt.load(ckpt.newest_checkpoint(run_dir / "rounds" / round_name))["model"]


def _remove(folder: Path) -> None:
    for p in sorted(folder.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()


def test_loop_writes_official_labels_and_resumes_identically(tmp_path: Path) -> None:
    cfg = _tiny(n_train=2, min_matches=0, min_inlier_ratio=0.0)  # every pair kept, so both rounds train
    runtime = rt.init("cpu", seed=0)
    _, summary = two_view.train_model(cfg, run_dir=tmp_path / "a", runtime=runtime, resume=False)
    assert [(r["round"], r["teacher"], r["pairs"], r["verified"], r["steps"]) for r in summary["rounds"]] == [
        ("bs", "SIFT", 2, 2, 2), ("00", "student bs", 2, 2, 2)]
    assert all(len(r["test_rows"]) == 1 and 0 <= r["test_recall"] <= 1 for r in summary["rounds"])
    # the bootstrap labels on file are those of the SIFT teacher run by hand on each pair
    labels = read_labels_2d(label_path(tmp_path / "a" / "labels", -1, two_view.VIEW_SCENE))
    assert [(lab.i, lab.j) for lab in labels] == [(0, 1), (2, 3)]
    for pair, lab in zip(two_view.world_view_pairs(cfg, "train"), labels, strict=True):
        by_hand = teacher.two_view_teacher(pair.kp1, pair.kp2, pair.d1, pair.d2, pair.K1, pair.K2, ratio=0.75)
        assert (lab.num_inliers, lab.num_matches) == (by_hand.num_inliers, by_hand.num_matches)
        np.testing.assert_array_equal(lab.F, by_hand.F)
    final = _weights(tmp_path / "a", "00")

    # killed between rounds: round 00's labels and student gone
    two_view.train_model(cfg, run_dir=tmp_path / "b", runtime=runtime, resume=False)
    _remove(tmp_path / "b" / "rounds" / "00")
    _remove(tmp_path / "b" / "labels" / "00")
    _, again = two_view.train_model(cfg, run_dir=tmp_path / "b", runtime=runtime, resume=True)
    assert again["rounds"][1]["verified"] == 2
    for k, v in _weights(tmp_path / "b", "00").items():
        torch.testing.assert_close(v, final[k], rtol=0, atol=0)

    # killed inside round 00 after its first step
    round_dir = tmp_path / "b" / "rounds" / "00"
    ckpt.newest_checkpoint(round_dir).unlink()
    (round_dir / "summary.json").unlink()
    two_view.train_model(cfg, run_dir=tmp_path / "b", runtime=runtime, resume=True)
    for k, v in _weights(tmp_path / "b", "00").items():
        torch.testing.assert_close(v, final[k], rtol=0, atol=0)


def _pairs() -> list[two_view.ViewPair]:
    return two_view.world_view_pairs(_tiny(), "train")


def test_label_files_round_trip_in_the_official_layout(tmp_path: Path) -> None:
    pairs = _pairs()
    task = two_view.RelativePoseTask(_tiny(), pairs, [])
    rng = np.random.default_rng(0)
    labels = [Label2D(p.i, p.j, int(rng.integers(0, 50)), int(rng.integers(50, 200)), rng.normal(size=(3, 3)))
              for p in pairs]
    task.write_labels(tmp_path, 0, labels)
    path = tmp_path / "00" / "views" / "pseudo-label.log"
    lines = path.read_text().splitlines()
    assert len(lines) == 4
    first = lines[0].split()
    assert first[:4] == [str(labels[0].i), str(labels[0].j), str(labels[0].num_inliers), str(labels[0].num_matches)]
    np.testing.assert_array_equal(np.array(first[4:], dtype=float), labels[0].F.ravel())  # row-major F
    back = task.read_labels(tmp_path, 0)
    for a, b in zip(labels, back, strict=True):
        assert (a.i, a.j, a.num_inliers, a.num_matches) == (b.i, b.j, b.num_inliers, b.num_matches)
        np.testing.assert_array_equal(a.F, b.F)
    assert task.read_labels(tmp_path, 1) is None  # round 01 never taught
    path.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(LowlabelError, match="no label for pair 6 7"):
        task.read_labels(tmp_path, 0)


@pytest.mark.parametrize(("inliers", "matches", "kept"), [
    (30, 100, True),  # both thresholds inclusive
    (29, 100, False),  # ratio 0.29
    (99, 99, False),  # fewer than 100 matches
    (0, 0, False),
    (1000, 1000, True),
])
def test_verifier_boundaries_through_the_task(inliers: int, matches: int, kept: bool) -> None:
    task = two_view.RelativePoseTask(_tiny(), [], [])
    assert task.verified(Label2D(0, 1, inliers, matches, np.eye(3))) is kept


def test_label_correctness_from_f_alone() -> None:
    pair = _pairs()[0]
    true_F = two_view._true_fundamental(pair)
    assert two_view.fundamental_pose_correct(true_F, pair)
    assert two_view.fundamental_pose_correct(-3.0 * true_F, pair)  # F is defined up to scale and sign
    off = dataclasses.replace(pair, R=Rotation.from_rotvec([0, np.radians(20), 0]).as_matrix() @ pair.R)
    assert not two_view.fundamental_pose_correct(two_view._true_fundamental(off), pair)
    assert not two_view.fundamental_pose_correct(np.eye(3), pair)  # the teacher's failure value
    # the oracle's F is the world's own F (tested against depth correspondences in tests/data), scaled to F22 = 1
    world_F = image_pair(np.random.default_rng([5, 0]), _tiny().world.image_config()).fundamental
    np.testing.assert_allclose(true_F, world_F / world_F[2, 2], rtol=1e-9, atol=1e-12)


def test_pose_metrics_by_hand() -> None:
    rows = [{"rotation_error": r, "translation_error": t} for r, t in [(1, 2), (11, 3), (5, 12), (180, 180)]]
    m = two_view.pose_metrics(rows)
    assert (m["test_recall"], m["rotation_recall"], m["translation_recall"]) == (0.25, 0.5, 0.5)
    assert (m["rotation_error_median"], m["translation_error_median"]) == (8.0, 7.5)
    assert two_view.pose_errors(np.eye(3), np.zeros(3), _pairs()[0]) == (180.0, 180.0)  # a failed estimate


def test_batches_are_deterministic_with_mixed_queries() -> None:
    pairs = _pairs()
    cfg = _tiny()
    Fs = [np.full((3, 3), float(k)) for k in range(len(pairs))]
    source = two_view.ViewBatches(list(zip(pairs, Fs, strict=True)), cfg, seed=3)
    assert source.steps_per_epoch == 2
    a, b = list(source.epoch(0)), list(source.epoch(0))
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            torch.testing.assert_close(u, v, rtol=0, atol=0)
    im1, im2, queries, fmatrix = a[0]
    h, w = cfg.world.height, cfg.world.width
    assert im1.shape == im2.shape == (2, 3, h, w) and queries.shape == (2, 32, 2)
    for b_idx in range(2):
        k = int(fmatrix[b_idx, 0, 0])  # which pair went into this slot
        kp = torch.as_tensor(pairs[k].kp1, dtype=torch.float32)
        assert all((kp == q).all(1).any() for q in queries[b_idx, :16])  # first half: SIFT keypoints of view 1
        assert (queries[b_idx, 16:, 0] <= w - 1).all() and (queries[b_idx, 16:, 1] <= h - 1).all()
    assert next(iter(source.epoch(0, start=1)))[2].equal(a[1][2])  # resuming mid-epoch gives the same batch
    with pytest.raises(LowlabelError, match="no verified 2D pseudo-label"):
        two_view.ViewBatches([], cfg, seed=0)


def test_official_2d_defaults() -> None:
    cfg = two_view.Config2D()
    assert (cfg.num_kpts, cfg.ratio, cfg.threshold, cfg.min_matches, cfg.min_inlier_ratio) == (
        10_000, 0.75, 1e-3, 100, 0.3)
    assert (cfg.num_queries, cfg.batch_pairs, cfg.meta_iters, cfg.finetune, cfg.train.max_steps) == (
        500, 2, 2, False, 40_000)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.schedule) == ("adam", 1e-4, "constant")
    s = cfg.student
    assert (s.backbone, s.width, s.coarse_dim, s.fine_dim, s.window_size, s.pretrained) == (
        "resnet50", 64, 128, 128, 0.125, False)
    assert (cfg.images.sample_rate, cfg.images.order) == (0.2, "listdir")  # config_sgp.yml; official label indices
