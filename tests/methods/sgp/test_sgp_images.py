"""2D SGP on image pairs in the MegaDepth layout (`lowlabel sgp train --images`): the reader's pairs, poses, teaching
subset and resizing against the world that drew the images, and the command killed (SIGKILL) inside a round and
resumed to the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lowlabel.data.synth.geometry import ImagePairConfig, image_pair
from lowlabel.engine import checkpoint as ckpt
from lowlabel.errors import LowlabelError
from lowlabel.methods.sgp import images, two_view
from lowlabel.methods.sgp.labels import read_labels_2d
from lowlabel_cli import run_here

pytest.importorskip("cv2")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORLD = ImagePairConfig(height=96, width=128, dot_cell=0.06)
N_PAIRS = 4
TINY = ["--set", "student.backbone=resnet18", "--set", "student.width=12", "--set", "student.coarse_dim=8",
        "--set", "student.fine_dim=8", "--set", "num_queries=32", "--set", "min_matches=0",
        "--set", "min_inlier_ratio=0.0", "--set", "images.sample_rate=0.5", "--device", "cpu", "--threads", "1"]


def _camera_line(name: str, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> str:
    values = [WORLD.width, WORLD.height, K[0, 0], K[1, 1], K[0, 2], K[1, 2], *R.ravel(), *t]
    return " ".join([name, *map(repr, map(float, values))])


def write_megadepth(root: Path) -> tuple[Path, list]:
    """`root/0000/dense0/aligned` with N_PAIRS geometry-world pairs a<k>.png -> b<k>.png (camera a at the world
    origin, b at the pair's pose): the aligned folder and the world's pairs."""
    folder = root / "0000" / "dense0" / "aligned"
    (folder / "images").mkdir(parents=True)
    world = [image_pair(np.random.default_rng([7, k]), WORLD) for k in range(N_PAIRS)]
    lines = ["# name w h fx fy cx cy R t"]
    for k, p in enumerate(world):
        Image.fromarray(p.img1).save(folder / "images" / f"a{k}.png")
        Image.fromarray(p.img2).save(folder / "images" / f"b{k}.png")
        lines += [_camera_line(f"a{k}.png", p.K, np.eye(3), np.zeros(3)), _camera_line(f"b{k}.png", p.K, p.R, p.t)]
    (folder / "img_cam.txt").write_text("\n".join(lines) + "\n")
    (folder / "pairs.txt").write_text("".join(f"a{k}.png b{k}.png\n" for k in range(N_PAIRS)))
    return folder, world


def _shuffled() -> list[int]:
    """Pair indices in the official deterministic shuffle of pairs.txt (the first sample_rate share is taught)."""
    order = list(range(N_PAIRS))
    random.Random(15213).shuffle(order)
    return order


def test_reader_gives_the_worlds_pairs_taught_subset_and_held_out_rest(tmp_path: Path) -> None:
    folder, world = write_megadepth(tmp_path / "md")
    cfg = two_view.Config2D(images=two_view.ImageDataConfig(sample_rate=0.5))
    train, test = images.image_pairs(tmp_path / "md", cfg)
    shuffled = _shuffled()
    names = os.listdir(folder / "images")  # label indices refer to this order
    for pairs, expected in ((train, shuffled[:2]), (test, shuffled[2:])):
        assert [(p.i, p.j) for p in pairs] == [(names.index(f"a{k}.png"), names.index(f"b{k}.png")) for k in expected]
        for p, k in zip(pairs, expected, strict=True):
            assert p.scene == "0000/dense0/aligned"
            np.testing.assert_array_equal(p.img1, world[k].img1)
            np.testing.assert_allclose(p.R, world[k].R, atol=1e-12)
            np.testing.assert_allclose(p.t, world[k].t, atol=1e-12)
            assert len(p.kp1) >= 5 and p.d1.shape == (len(p.kp1), 128)
    # the aligned folder itself is a data folder too; with nothing held out, the taught pairs are the test pairs
    cfg = two_view.Config2D(images=two_view.ImageDataConfig(sample_rate=1.0))
    train, test = images.image_pairs(folder, cfg)
    assert len(train) == N_PAIRS and test == train and train[0].scene == "aligned"


def test_resizing_maps_pixel_centres() -> None:
    K = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])
    img = np.zeros((96, 128, 3), np.uint8)
    img[10, 20] = 255
    out, K2 = images.resized_view(img, K, [192, 256])
    assert out.shape == (192, 256, 3)
    # doubling: pixel centre x maps to 2x + 0.5, so the principal point (image centre here) stays the centre
    np.testing.assert_allclose(K2, [[200.0, 0, 127.5], [0, 200.0, 95.5], [0, 0, 1]])
    assert out[20:22, 40:42].min() == 255  # the bright pixel (10, 20) becomes the 2 x 2 block at (20, 40)
    with pytest.raises(LowlabelError, match="height, width"):
        images.resized_view(img, K, [96])


def test_reader_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(LowlabelError, match="no scene folder"):
        images.image_pairs(tmp_path, two_view.Config2D())
    folder, _ = write_megadepth(tmp_path / "md")
    with pytest.raises(LowlabelError, match="no pair to teach"):
        images.image_pairs(folder, two_view.Config2D(images=two_view.ImageDataConfig(sample_rate=0.2)))
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(folder / "images" / "a0.png")
    with pytest.raises(LowlabelError, match="image_size"):
        images.image_pairs(folder, two_view.Config2D(images=two_view.ImageDataConfig(sample_rate=1.0)))


def _round_weights(run_dir: Path, round_name: str) -> dict[str, torch.Tensor]:
    return ckpt.load(ckpt.newest_checkpoint(run_dir / "rounds" / round_name))["model"]


def test_train_images_killed_inside_a_round_resumes_to_the_same_weights(tmp_path: Path, lowlabel_processes) -> None:
    procs, steps = lowlabel_processes, 12
    folder, _ = write_megadepth(tmp_path / "md")
    train = ["sgp", "train", "--images", "--data", "md", "--rounds", "1", "--iterations", steps,
             "--set", "train.checkpoint_every=1", "--set", "train.keep_checkpoints=2", *TINY]
    whole = procs.start(*train, "--out", "whole", cwd=tmp_path)
    killed = procs.start(*train, "--out", "killed", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "killed").glob("sgp/*/rounds/bs/checkpoints/step_*.pt")):
        assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    run = procs.only_run(tmp_path / "killed", "sgp")
    assert not (run / "summary.json").exists()
    code, out = run_here("sgp", "train", "--resume", run)  # a 2D run resumes only as one
    assert code == 2 and "image-pair (2D) run: resume it with --images" in out
    output = procs.run("sgp", "train", "--images", "--resume", run, "--threads", "1", "--device", "cpu",
                       cwd=tmp_path)
    assert f"run folder: {run}" in output.replace("\n", "")
    procs.finish(whole)
    done = procs.only_run(tmp_path / "whole", "sgp")
    for round_name in ("bs", "00"):
        a, b = _round_weights(done, round_name), _round_weights(run, round_name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), round_name
    labels = read_labels_2d(run / "labels" / "bs" / "0000" / "dense0" / "aligned" / "pseudo-label.log")
    names = os.listdir(folder / "images")
    assert [(lab.i, lab.j) for lab in labels] == [(names.index(f"a{k}.png"), names.index(f"b{k}.png"))
                                                  for k in _shuffled()[:2]]
    summary = json.loads((run / "summary.json").read_text())
    assert [(r["round"], r["pairs"], r["steps"]) for r in summary["rounds"]] == [("bs", 2, steps), ("00", 2, steps)]
    assert all(len(r["test_rows"]) == 2 for r in summary["rounds"])  # the two held-out pairs
