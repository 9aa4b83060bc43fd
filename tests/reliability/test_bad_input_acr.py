"""Bad input to ACR: labelled-subset lists, the CUB-200 and Indoor-67 list files, zipped class folders, image files,
source-model weights, the losses' tensors, and `lowlabel acr train/eval/predict`."""

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
from lowlabel.methods.acr import losses, source
from lowlabel.methods.acr.data import (
    image_tensor,
    per_class_split,
    read_cub200,
    read_image_folder,
    read_indoor67,
    read_labelled_list,
    read_zip_folders,
)

LINES = st.lists(st.text(alphabet="ab/.jpg 0123\t#", max_size=20), max_size=4)


def png(path: Path, value: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 20, 3), value, dtype=np.uint8)).save(path)


def folders(root: Path) -> Path:
    """root/{train,test}/{a,b}/ with three PNGs per class and split."""
    for split in ("train", "test"):
        for c, value in (("a", 40), ("b", 200)):
            for i in range(3):
                png(root / split / c / f"{i}.png", value)
    return root


@given(LINES)
def test_labelled_list_of_any_lines(tmp_path_factory, lines):
    root = folders(tmp_path_factory.mktemp("data"))
    path = root / "labelled.txt"
    path.write_text("\n".join(lines))
    images = read_image_folder(root / "train")
    expect_clear_error("acr: labelled list", lambda: read_labelled_list(path, images), path, valid_ok=True)


@given(st.binary(max_size=60))
def test_labelled_list_of_any_bytes(tmp_path_factory, content):
    root = folders(tmp_path_factory.mktemp("data"))
    (root / "labelled.txt").write_bytes(content)
    images = read_image_folder(root / "train")
    expect_clear_error("acr: labelled list", lambda: read_labelled_list(root / "labelled.txt", images),
                       "labelled.txt")


@given(st.sampled_from(["images.txt", "train_test_split.txt"]), st.binary(max_size=60))
def test_cub_list_files_of_any_bytes(tmp_path_factory, name, content):
    base = tmp_path_factory.mktemp("cub") / "CUB_200_2011"
    png(base / "images" / "001.Bird" / "x.jpg")
    (base / "images.txt").write_text("1 001.Bird/x.jpg\n")
    (base / "train_test_split.txt").write_text("1 1\n")
    (base / name).write_bytes(content)
    expect_clear_error("acr: CUB lists", lambda: read_cub200(base.parent), ["images.txt", "train_test_split.txt"],
                       valid_ok=True)


@given(LINES)
def test_indoor_list_of_any_lines(tmp_path_factory, lines):
    base = tmp_path_factory.mktemp("indoor") / "indoorCVPR_09"
    png(base / "Images" / "bar" / "x.jpg")
    (base / "TrainImages.txt").write_text("\n".join(lines))
    (base / "TestImages.txt").write_text("bar/x.jpg\n")
    expect_clear_error("acr: Indoor lists", lambda: read_indoor67(base.parent), ["TrainImages.txt", "TestImages.txt"],
                       valid_ok=True)


@given(st.binary(max_size=200))
def test_zip_archive_of_any_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("zip") / "images_background.zip"
    path.write_bytes(content)
    expect_clear_error("acr: zip archive", lambda: read_zip_folders([path]), path)


@given(st.binary(max_size=100))
def test_corrupt_image_in_a_split(tmp_path_factory, content):
    root = folders(tmp_path_factory.mktemp("data"))
    (root / "train" / "b" / "1.png").write_bytes(content)
    images = read_image_folder(root / "train")
    expect_clear_error("acr: image file", lambda: image_tensor(images, 18), "1.png")


@given(st.binary(max_size=100),
       st.sampled_from(["source.pt", "source.safetensors"]))
def test_source_weights_of_any_bytes(tmp_path_factory, content, name):
    path = tmp_path_factory.mktemp("src") / name
    path.write_bytes(content)
    expect_clear_error("acr: source weights", lambda: source.from_file(path), path)


def test_source_weights_of_another_network(tmp_path):
    path = atomic_save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    expect_clear_error("acr: source weights", lambda: source.from_file(path), path)


def test_per_class_split_asks_for_too_much():
    labels = np.asarray([0, 0, 1])
    for per_class in (0, -1, 2):
        expect_clear_error("acr: labelled split", lambda k=per_class: per_class_split(labels, k, seed=1), "class")


SIZES = st.tuples(st.integers(0, 3), st.integers(1, 3), st.integers(1, 3))


@given(SIZES, SIZES)
def test_loss_shapes(a, b):
    (n, c, _), (m, c2, _) = a, b
    x, y = torch.randn(n, c), torch.randn(m, c2)
    matching = n == m and c == c2
    expect_clear_error("acr: mmd_loss shapes", lambda: losses.mmd_loss(x, y), "mmd_loss",
                       valid_ok=c == c2 and n > 0 and m > 0)
    expect_clear_error("acr: akc_loss shapes", lambda: losses.akc_loss(x, y, torch.ones(m, dtype=torch.bool)),
                       "akc_loss", valid_ok=matching)
    expect_clear_error("acr: feature table shapes", lambda: losses.update_feature_table(
        x, y, torch.ones(m + 1, dtype=torch.bool), 4), "update_feature_table")
    expect_clear_error("acr: fixmatch_loss shapes", lambda: losses.fixmatch_loss(x, y), "fixmatch_loss",
                       valid_ok=matching)
    expect_clear_error("acr: mean_squared_consistency shapes", lambda: losses.mean_squared_consistency(x, y),
                       "mean_squared_consistency", valid_ok=matching)
    expect_clear_error("acr: entropy_mask shapes", lambda: losses.entropy_mask(x[None], 0.7, 10), "entropy_mask")
    expect_clear_error("acr: entropy_mask classes", lambda: losses.entropy_mask(x, 0.7, 1), "num_classes")


@pytest.fixture(scope="module")
def source_file(tmp_path_factory) -> Path:
    """A width-4 ResNet with a 2-way head as a torchvision-format state dict (no pretraining: errors come first)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = source.small_resnet(layers=[1, 1, 1, 1], width=4, num_classes=2)
    return atomic_save(net.state_dict(), tmp_path_factory.mktemp("src") / "source.pt")


TINY = ["--image-size", "16", "--iterations", "2", "--device", "cpu", "--set", "labelled_bs=2", "--set",
        "unlabelled_bs=2", "--set", "akc_gate_classes=0"]


@given(st.binary(max_size=60))
def test_cli_train_on_a_corrupt_image(tmp_path_factory, source_file, content):
    root = folders(tmp_path_factory.mktemp("cli"))
    (root / "test" / "a" / "2.png").write_bytes(content)
    expect_cli_error("cli: acr train corrupt image", ["acr", "train", "--data", root, "--source", source_file,
                                                      "--labelled-per-class", "1", "--out", root / "runs", *TINY],
                     "2.png", run_root=root / "runs")


@pytest.mark.parametrize(("args", "names"), [
    (["--set", "ssl=mixmatch"], "ssl"), (["--set", "dataset=coco"], "dataset"), (["--labelled-per-class", "4"], "4"),
    (["--labelled-list", "missing.txt"], "missing.txt"), (["--set", "lambda_arc=x"], "lambda_arc"),
    (["--source", "missing.pt"], "missing.pt")])
def test_cli_train_bad_settings(tmp_path, source_file, args, names):
    root = folders(tmp_path)
    source_args = [] if "--source" in args else ["--source", str(source_file)]
    expect_cli_error("cli: acr train bad settings", ["acr", "train", "--data", root, *source_args, "--out",
                                                     root / "runs", *TINY, *args], names, run_root=root / "runs")


@pytest.mark.parametrize("command", [["eval"], ["predict", "x.png"]])
def test_cli_eval_and_predict_need_a_run_folder(tmp_path, command):
    (tmp_path / "resolved.yaml").write_text("ssl: none\nnum_classes: 2\n")
    expect_cli_error("cli: acr eval/predict", ["acr", command[0], tmp_path, *command[1:], "--device", "cpu"],
                     "checkpoint")
    expect_cli_error("cli: acr eval/predict", ["acr", command[0], tmp_path / "nothing", *command[1:]],
                     "resolved.yaml")
