"""FDRL readers on tiny layouts written by the tests: RAF-DB basic, CSV, class folders / FER2013; image loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lowlabel.errors import LowlabelError
from lowlabel.methods.fdrl.data import (
    FER2013_CLASSES,
    RAF_CLASSES,
    load_images,
    read_class_folders,
    read_csv_labels,
    read_fer2013,
    read_raf_basic,
)


def write_image(path: Path, value: int = 128, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, np.uint8), mode=mode).save(path)
    return path


def raf_layout(root: Path) -> Path:
    lines = ["train_00001.jpg 5", "train_00002.jpg 1", "", "test_0001.jpg 7", "train_00003.jpg 3",
             "test_0002.jpg 2"]
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for line in filter(None, lines):
        write_image(root / "Image" / "aligned" / f"{line.split()[0][:-4]}_aligned.jpg")
    return root


def test_raf_basic_reads_both_splits(tmp_path: Path) -> None:
    root = raf_layout(tmp_path / "raf")
    train = read_raf_basic(root, "train")
    assert [p.name for p in train.paths] == ["train_00001_aligned.jpg", "train_00002_aligned.jpg",
                                             "train_00003_aligned.jpg"]
    assert train.labels.tolist() == [4, 0, 2] and train.labels.dtype == np.int64
    assert train.classes == RAF_CLASSES and RAF_CLASSES[4] == "sadness"
    test = read_raf_basic(root, "test")
    assert [p.name for p in test.paths] == ["test_0001_aligned.jpg", "test_0002_aligned.jpg"]
    assert test.labels.tolist() == [6, 1] and len(test) == 2
    x = load_images(test.paths, 8)
    assert x.shape == (2, 3, 8, 8) and torch.isfinite(x).all()


def test_raf_original_images_are_a_fallback(tmp_path: Path) -> None:
    root = tmp_path / "raf"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 4\n")
    write_image(root / "Image" / "original" / "train_00001.jpg")
    assert read_raf_basic(root).paths == [root / "Image" / "original" / "train_00001.jpg"]


def test_raf_errors_name_the_file_and_line(tmp_path: Path) -> None:
    root = raf_layout(tmp_path / "raf")
    (root / "Image" / "aligned" / "train_00002_aligned.jpg").unlink()
    with pytest.raises(LowlabelError, match=r"train_00002_aligned\.jpg: image not found.*line 2.*1 of 3"):
        read_raf_basic(root, "train")
    listing = root / "EmoLabel" / "list_patition_label.txt"
    for bad, what in [("train_00009.jpg 8", "line 2"), ("train_00009.jpg", "line 2"), ("val_1.jpg 3", "neither")]:
        listing.write_text(f"train_00001.jpg 5\n{bad}\n")
        with pytest.raises(LowlabelError, match=what) as err:
            read_raf_basic(root)
        assert str(listing) in str(err.value)
    with pytest.raises(LowlabelError, match=r"EmoLabel/list_patition_label\.txt"):
        read_raf_basic(tmp_path)
    with pytest.raises(LowlabelError, match="split"):
        read_raf_basic(root, "validation")


def test_csv_with_names_indices_and_header(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a.png")
    write_image(tmp_path / "img" / "b.png")
    absolute = write_image(tmp_path / "elsewhere" / "c.jpg")
    names = tmp_path / "names.csv"
    names.write_text(f"path,label\nimg/a.png,sad\nimg/b.png,happy\n{absolute},sad\n")
    got = read_csv_labels(names)
    assert got.classes == ("happy", "sad") and got.labels.tolist() == [1, 0, 1]
    assert got.paths == [tmp_path / "img" / "a.png", tmp_path / "img" / "b.png", absolute]
    fixed = read_csv_labels(names, classes=("sad", "happy", "fear"))
    assert fixed.labels.tolist() == [0, 1, 0] and fixed.classes == ("sad", "happy", "fear")
    indices = tmp_path / "indices.csv"
    indices.write_text("img/a.png,3\nimg/b.png,0\n")
    got = read_csv_labels(indices)
    assert got.labels.tolist() == [3, 0] and got.classes == ("0", "1", "2", "3")


def test_csv_errors_name_the_file_and_line(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    csv_file = tmp_path / "labels.csv"
    cases = [("a.png,1\nmissing.png,2\n", r"missing\.png: image not found.*line 2"),
             ("a.png,1,extra\n", "line 1"), ("a.png,\n", "line 1"), ("a.png,-1\n", "line 1 has the negative")]
    for text, pattern in cases:
        csv_file.write_text(text)
        with pytest.raises(LowlabelError, match=pattern) as err:
            read_csv_labels(csv_file)
        assert str(csv_file) in str(err.value)
    csv_file.write_text("a.png,angry\n")
    with pytest.raises(LowlabelError, match="line 1 has the label 'angry'"):
        read_csv_labels(csv_file, classes=("happy",))
    with pytest.raises(LowlabelError, match="not found"):
        read_csv_labels(tmp_path / "none.csv")


def fer_layout(root: Path) -> Path:
    for split, prefix in [("train", "Training"), ("test", "PrivateTest")]:
        for k, cls in enumerate(FER2013_CLASSES):
            for i in range(2):
                write_image(root / split / cls / f"{prefix}_{k}{i}.jpg", value=20 * k, size=(48, 48), mode="L")
    return root


def test_fer2013_layout_and_prefixes(tmp_path: Path) -> None:
    root = fer_layout(tmp_path / "fer")
    train = read_fer2013(root, "train")
    assert len(train) == 14 and train.classes == FER2013_CLASSES
    assert train.labels.tolist() == [k for k in range(7) for _ in range(2)]
    assert all(p.name.startswith("Training_") for p in train.paths)
    x = load_images(train.paths[:3], 16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert x.shape == (3, 3, 16, 16)
    torch.testing.assert_close(x[2], torch.full((3, 16, 16), 20 / 255))  # greyscale -> 3 equal channels
    write_image(root / "test" / "happy" / "PublicTest_99.jpg")
    with pytest.raises(LowlabelError, match=r"PublicTest_99\.jpg: file name lacks the split prefix 'PrivateTest_'"):
        read_fer2013(root, "test")
    with pytest.raises(LowlabelError, match=r"validation.*not found"):
        read_fer2013(root, "validation")


def test_class_folders_errors(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    write_image(root / "b" / "1.png")
    write_image(root / "a" / "2.png")
    got = read_class_folders(root)
    assert got.classes == ("a", "b") and got.labels.tolist() == [0, 1]
    with pytest.raises(LowlabelError, match="class folder not found"):
        read_class_folders(root, classes=("a", "c"))
    (root / "empty").mkdir()
    with pytest.raises(LowlabelError, match="holds no images"):
        read_class_folders(root)
    write_image(root / "loose.png")
    with pytest.raises(LowlabelError, match=r"loose\.png: image directly under"):
        read_class_folders(root)


def test_corrupt_image_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(LowlabelError, match=r"bad\.jpg"):
        load_images([write_image(tmp_path / "good.png"), bad], 8)


@pytest.mark.realdata
def test_fer2013_real_splits(shared_data: Path) -> None:
    test = read_fer2013(shared_data / "fer2013", "test")
    assert len(test) == 3589 and set(np.unique(test.labels).tolist()) == set(range(7))
    train = read_fer2013(shared_data / "fer2013", "train")
    assert np.bincount(train.labels).tolist() == [1000, 436, 1000, 1000, 1000, 1000, 1000]
    x = load_images(test.paths[:4], 48)
    assert x.shape == (4, 3, 48, 48) and torch.isfinite(x).all()
