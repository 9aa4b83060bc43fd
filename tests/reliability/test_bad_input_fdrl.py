"""Bad input to FDRL: the RAF-DB list file, the label CSV, image files, a pretrained backbone file, and
`lowlabel fdrl train` with broken data or settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sweep_harness import expect_clear_error, expect_cli_error

from lowlabel.engine.checkpoint import atomic_save
from lowlabel.methods.fdrl import recipe
from lowlabel.methods.fdrl.data import load_image_bytes, read_class_folders, read_csv_labels, read_raf_basic

LINES = st.lists(st.text(alphabet="trainest_0123.jpg ,\t#", max_size=24), max_size=4)


def png(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 20, 3), value, dtype=np.uint8)).save(path)
    return path


def raf(root: Path) -> Path:
    """A RAF-DB basic layout with one aligned image per split."""
    for name in ("train_00001", "test_0001"):
        png(root / "Image" / "aligned" / f"{name}_aligned.jpg")
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    return root / "EmoLabel" / "list_patition_label.txt"


def folders(root: Path) -> Path:
    """root/{train,test}/{a,b}/ with two PNGs per class and split."""
    for split in ("train", "test"):
        for c, value in (("a", 40), ("b", 200)):
            for i in range(2):
                png(root / split / c / f"{i}.png", value)
    return root


@given(LINES)
def test_raf_list_of_any_lines(tmp_path_factory, lines):
    path = raf(tmp_path_factory.mktemp("raf"))
    path.write_text("\n".join(lines))
    expect_clear_error("fdrl: RAF-DB list", lambda: read_raf_basic(path.parent.parent, "train"), path)


@given(st.binary(max_size=60))
def test_raf_list_of_any_bytes(tmp_path_factory, content):
    path = raf(tmp_path_factory.mktemp("raf"))
    path.write_bytes(content)
    expect_clear_error("fdrl: RAF-DB list", lambda: read_raf_basic(path.parent.parent, "test"), path)


@given(LINES)
def test_label_csv_of_any_lines(tmp_path_factory, lines):
    root = tmp_path_factory.mktemp("csv")
    png(root / "train_0.jpg")
    (root / "labels.csv").write_text("\n".join(lines))
    expect_clear_error("fdrl: label CSV", lambda: read_csv_labels(root / "labels.csv"), "labels.csv")


@given(st.binary(max_size=60))
def test_label_csv_of_any_bytes(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("csv")
    (root / "labels.csv").write_bytes(content)
    expect_clear_error("fdrl: label CSV", lambda: read_csv_labels(root / "labels.csv"), "labels.csv")


@given(st.binary(max_size=100))
def test_corrupt_image_in_a_class_folder(tmp_path_factory, content):
    root = folders(tmp_path_factory.mktemp("data"))
    (root / "train" / "b" / "1.png").write_bytes(content)
    images = read_class_folders(root / "train")
    expect_clear_error("fdrl: image file", lambda: load_image_bytes(images.paths, 16), "1.png")


@given(st.binary(max_size=100))
def test_pretrained_backbone_of_any_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("weights") / "resnet18_msceleb.pth"
    path.write_bytes(content)
    cfg = recipe.Config(width=4, pretrained=str(path))
    expect_clear_error("fdrl: pretrained backbone", lambda: recipe.build_model(cfg), path)


def test_pretrained_backbone_of_another_network(tmp_path):
    path = atomic_save({"state_dict": {"encoder.weight": torch.zeros(3, 3)}}, tmp_path / "other.pth")
    expect_clear_error("fdrl: pretrained backbone", lambda: recipe.build_model(recipe.Config(
        width=4, pretrained=str(path))), path)
    wider = atomic_save(recipe.build_model(recipe.Config(width=8)).backbone.state_dict(), tmp_path / "wide.pth")
    expect_clear_error("fdrl: pretrained backbone", lambda: recipe.build_model(recipe.Config(
        width=4, pretrained=str(wider))), wider)


TINY = ["--image-size", "16", "--device", "cpu", "--threads", "1", "--set", "width=4", "--set", "latent_dim=4",
        "--set", "batch_size=2", "--set", "train.max_steps=1"]


@given(st.binary(max_size=60))
def test_cli_train_on_a_corrupt_image(tmp_path_factory, content):
    root = folders(tmp_path_factory.mktemp("cli"))
    (root / "test" / "a" / "1.png").write_bytes(content)
    expect_cli_error("cli: fdrl train corrupt image", ["fdrl", "train", "--data", root, "--out", root / "runs",
                                                       *TINY], "1.png", run_root=root / "runs")


@pytest.mark.parametrize(("args", "names"), [
    (["--head", "svm"], "head"), (["--set", "mlp_layers=0"], "mlp_layers"), (["--set", "balance=l2"], "balance"),
    (["--pretrained", "missing.pth"], "missing.pth"), (["--backbone", "vgg"], "backbone"),
    (["--set", "mlp_hidden=x"], "mlp_hidden")])
def test_cli_train_bad_settings(tmp_path, args, names):
    root = folders(tmp_path)
    expect_cli_error("cli: fdrl train bad settings", ["fdrl", "train", "--data", root, "--out", root / "runs", *TINY,
                                                      *args], names, run_root=root / "runs")


def test_cli_train_on_an_unknown_faces_world(tmp_path):
    expect_cli_error("cli: fdrl train bad settings", ["fdrl", "train", "--out", tmp_path / "runs", *TINY, "--set",
                                                      "world.expressions=smiles"], "expressions",
                     run_root=tmp_path / "runs")
