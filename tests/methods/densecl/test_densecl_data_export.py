"""Image-folder reading (recursive, corrupt files named or skipped and counted), folder training, and export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine import runtime as rt
from lowlabel.engine.recipe import TrainConfig
from lowlabel.errors import LowlabelError
from lowlabel.methods.densecl.cli import app
from lowlabel.methods.densecl.data import ImageFolder, resize_center_crop, scan_folder
from lowlabel.methods.densecl.export import detectron2_name, to_detectron2
from lowlabel.methods.densecl.recipe import AugConfig, Config, ModelConfig, train
from lowlabel.nn.resnet import resnet18, resnet50


def make_folder(root: Path, corrupt: bool) -> Path:
    rng = np.random.default_rng(0)
    (root / "a" / "deep").mkdir(parents=True)
    (root / "b").mkdir()
    for i, (sub, ext) in enumerate([("a", "png"), ("a/deep", "jpg"), ("b", "webp"), ("b", "png"), ("", "jpeg")]):
        pixels = rng.integers(0, 256, size=(20 + i, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / sub / f"img{i}.{ext}")
    (root / "b" / "notes.txt").write_text("not an image")
    if corrupt:
        good = (root / "a" / "img0.png").read_bytes()
        (root / "a" / "deep" / "broken.png").write_bytes(good[: len(good) // 2])
    return root


def test_scan_is_recursive_and_names_or_counts_corrupt_files(tmp_path: Path) -> None:
    clean = scan_folder(make_folder(tmp_path / "clean", corrupt=False))
    names = [p.relative_to(tmp_path / "clean").as_posix() for p in clean.paths]
    assert names == ["a/deep/img1.jpg", "a/img0.png", "b/img2.webp", "b/img3.png", "img4.jpeg"] and clean.bad == []
    bad_root = make_folder(tmp_path / "bad", corrupt=True)
    with pytest.raises(LowlabelError, match=r"broken\.png"):
        scan_folder(bad_root)
    skipped = scan_folder(bad_root, skip_bad=True)
    assert len(skipped.paths) == 5 and [p.name for p, _ in skipped.bad] == ["broken.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(LowlabelError, match=r"no \.jpg"):
        scan_folder(tmp_path / "empty")


def test_resize_center_crop_keeps_the_centre() -> None:
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, 20:60] = 255  # the central 40x40 square is white, the sides black
    out = resize_center_crop(image, 20)
    assert out.shape == (3, 20, 20) and out.dtype == torch.uint8
    assert int(out[:, :, 1:-1].min()) == 255  # the outermost columns blend with the antialiasing filter
    assert ImageFolder([], 8).__len__() == 0


def tiny_config() -> Config:
    return Config(model=ModelConfig(arch="resnet18", small_stem=True, width=8, hid_dim=32, out_dim=16),
                  aug=AugConfig(image_size=16, load_size=20, blur_sigma=[0.1, 0.5]), queue_size=8, batch_size=2,
                  num_workers=0, skip_bad=True, train=TrainConfig(max_steps=2, log_every=1, checkpoint_every=2))


def test_train_on_folder_then_export_torchvision_and_detectron2(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "imgs", corrupt=True)
    run = tmp_path / "run"
    run.mkdir()
    summary = train(tiny_config(), data=data, run_dir=run, runtime=rt.init("cpu", seed=0), resume=False)
    assert summary["steps"] == 2 and summary["skipped_images"] == 1 and summary["mode"] == "densecl"
    assert "broken.png" in (run / "skipped_images.txt").read_text()
    state = ckpt.load(ckpt.newest_checkpoint(run))["model"]

    runner = CliRunner()
    for suffix in (".safetensors", ".pth"):
        out = tmp_path / f"tv{suffix}"
        result = runner.invoke(app, ["export", str(run), "--format", "torchvision", "--out", str(out)])
        assert result.exit_code == 0, result.output
        net = resnet18(num_classes=0, small_stem=True, width=8)  # lowlabel.nn's ResNet at the run's width
        net.load_state_dict(ckpt.load_weights(out), strict=True)
        torch.testing.assert_close(net.layer3[1].conv2.weight, state["encoder_q.backbone.layer3.1.conv2.weight"])
    d2 = tmp_path / "d2.pth"
    assert runner.invoke(app, ["export", str(run), "--format", "detectron2", "--out", str(d2)]).exit_code == 0
    weights = ckpt.load_weights(d2)
    assert "stem.conv1.weight" in weights and "res5.1.conv2.norm.running_var" in weights
    assert not any(k.endswith("num_batches_tracked") for k in weights)
    bad = runner.invoke(app, ["export", str(run), "--format", "mmdet", "--out", str(d2)])
    assert bad.exit_code != 0 and "unknown export format" in str(bad.exception)


def test_detectron2_names_match_the_official_mapping() -> None:
    expected = {  # written out from the rules of convert-pretrain-to-detectron2.py
        "conv1.weight": "stem.conv1.weight",
        "bn1.running_mean": "stem.conv1.norm.running_mean",
        "layer1.0.conv1.weight": "res2.0.conv1.weight",
        "layer1.0.bn3.bias": "res2.0.conv3.norm.bias",
        "layer1.0.downsample.0.weight": "res2.0.shortcut.weight",
        "layer1.0.downsample.1.weight": "res2.0.shortcut.norm.weight",
        "layer4.2.bn2.running_var": "res5.2.conv2.norm.running_var",
    }
    assert {k: detectron2_name(k) for k in expected} == expected
    renamed = to_detectron2(resnet50(num_classes=0).state_dict())
    assert len(renamed) == 265 and len(set(renamed)) == len(renamed)  # 318 keys minus 53 BN counters
