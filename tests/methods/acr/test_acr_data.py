"""ACR readers on tiny layouts written here: ImageFolder order, CUB/Indoor layouts, zips, splits, subset lists."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowlabel.errors import LowlabelError
from lowlabel.methods.acr.data import (
    center_crop,
    load_images,
    per_class_split,
    read_cub200,
    read_image_folder,
    read_indoor67,
    read_labelled_list,
    read_split_folders,
    read_zip_folders,
    resize_short,
    write_labelled_list,
)


def write_png(path: Path, value: int, size: tuple[int, int] = (6, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((3, 3, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_folder_lists_in_torchvision_order(tmp_path: Path) -> None:
    root = tmp_path / "train"
    for rel, v in [("b_cls/2.png", 1), ("b_cls/10.png", 2), ("a_cls/x.JPG", 3), ("a_cls/sub/y.png", 4),
                   ("a_cls/a.png", 5), ("a_cls/.hidden.png", 6), ("a_cls/.cache/z.png", 7)]:
        write_png(root / rel, v)
    (root / "a_cls" / "notes.txt").write_text("not an image")
    (root / "stray.png").write_bytes(b"")  # files at the split level are not classes
    images = read_image_folder(root)
    assert images.classes == ["a_cls", "b_cls"]
    # sorted(os.walk) per class, files sorted within each folder (string order: "10" < "2")
    assert images.names == ["a_cls/a.png", "a_cls/x.JPG", "a_cls/sub/y.png", "b_cls/10.png", "b_cls/2.png"]
    assert images.labels.tolist() == [0, 0, 0, 1, 1]
    assert images.read(3)[0, 0].tolist() == [2, 2, 2]
    sub = images.subset([4, 0])
    assert sub.names == ["b_cls/2.png", "a_cls/a.png"] and sub.labels.tolist() == [1, 0]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(LowlabelError, match="folder not found"):
        read_image_folder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    write_png(tmp_path / "flat" / "a.png", 1)
    with pytest.raises(LowlabelError, match="no class folders"):
        read_image_folder(tmp_path / "flat")
    write_png(tmp_path / "split" / "cat" / "a.png", 1)
    (tmp_path / "split" / "dog").mkdir()
    with pytest.raises(LowlabelError, match="dog: class folder holds no image"):
        read_image_folder(tmp_path / "split")


def test_split_folders_need_the_same_classes(tmp_path: Path) -> None:
    for split, classes in (("train", ["angry", "happy"]), ("test", ["angry", "happy"]), ("validation", ["angry"])):
        for c in classes:
            write_png(tmp_path / split / c / f"{split}_{c}.png", 9)
    out = read_split_folders(tmp_path, ("train", "test"))
    assert out["test"].labels.tolist() == [0, 1]
    with pytest.raises(LowlabelError, match="'validation' differ"):
        read_split_folders(tmp_path, ("train", "validation"))


CUB_IMAGES = ["002.Laysan/L_2.jpg", "001.Black/B_9.jpg", "001.Black/B_10.jpg", "002.Laysan/L_1.jpg",
              "001.Black/B_1.jpg", "002.Laysan/L_3.jpg"]
CUB_TRAIN = [1, 0, 1, 1, 0, 0]


def test_cub_official_download_equals_split_folders(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "CUB_200_2011"
    for i, rel in enumerate(CUB_IMAGES):
        write_png(raw / "images" / rel, i)
    (raw / "images.txt").write_text("".join(f"{i + 1} {rel}\n" for i, rel in enumerate(CUB_IMAGES)))
    (raw / "train_test_split.txt").write_text("".join(f"{i + 1} {t}\n" for i, t in enumerate(CUB_TRAIN)))
    split_root = tmp_path / "split" / "CUB_200_2011"
    for i, (rel, t) in enumerate(zip(CUB_IMAGES, CUB_TRAIN, strict=True)):
        write_png(split_root / ("train" if t else "test") / rel, i)
    from_raw, from_split = read_cub200(tmp_path / "raw"), read_cub200(tmp_path / "split")
    for split in ("train", "test"):
        assert from_raw[split].names == from_split[split].names
        assert from_raw[split].labels.tolist() == from_split[split].labels.tolist()
    assert from_raw["train"].names == ["001.Black/B_10.jpg", "002.Laysan/L_1.jpg", "002.Laysan/L_2.jpg"]
    assert from_raw["test"].names == ["001.Black/B_1.jpg", "001.Black/B_9.jpg", "002.Laysan/L_3.jpg"]
    assert from_raw["test"].classes == ["001.Black", "002.Laysan"]


def test_cub_errors_name_file_and_line(tmp_path: Path) -> None:
    base = tmp_path / "CUB_200_2011"
    write_png(base / "images" / "001.A" / "a.jpg", 1)
    (base / "images.txt").write_text("1 001.A/a.jpg\n2 001.A/b.jpg\n")
    (base / "train_test_split.txt").write_text("1 1\n")
    with pytest.raises(LowlabelError, match=r"images.txt, line 2: image id 2"):
        read_cub200(tmp_path)
    (base / "train_test_split.txt").write_text("1 1\n2\n")
    with pytest.raises(LowlabelError, match=r"train_test_split.txt, line 2"):
        read_cub200(tmp_path)
    (base / "train_test_split.txt").write_text("1 1\n2 0\n")
    with pytest.raises(LowlabelError, match="missing"):
        read_cub200(tmp_path)


def test_indoor_official_lists(tmp_path: Path) -> None:
    base = tmp_path / "indoorCVPR_09"
    for rel in ("kitchen/k1.jpg", "kitchen/k2.jpg", "bar/b1.jpg", "bar/b2.jpg"):
        write_png(base / "Images" / rel, 3)
    (tmp_path / "TrainImages.txt").write_text("kitchen/k2.jpg\nbar/b1.jpg\n\n")
    (tmp_path / "TestImages.txt").write_text("kitchen/k1.jpg\nbar/b2.jpg\n")
    out = read_indoor67(tmp_path)
    assert out["train"].names == ["bar/b1.jpg", "kitchen/k2.jpg"] and out["train"].labels.tolist() == [0, 1]
    assert out["test"].names == ["bar/b2.jpg", "kitchen/k1.jpg"]
    (tmp_path / "TestImages.txt").write_text("kitchen/k1.jpg\nbar/b1.jpg\n")
    with pytest.raises(LowlabelError, match=r"TestImages.txt, line 2: bar/b1.jpg is listed in both"):
        read_indoor67(tmp_path)


def test_zip_folders_dedupe_identical_members(tmp_path: Path) -> None:
    one, two = tmp_path / "one.zip", tmp_path / "two.zip"
    with zipfile.ZipFile(one, "w") as zf:
        zf.writestr("set1/Greek/c02/b.png", png_bytes(20))
        zf.writestr("set1/Greek/c01/a.png", png_bytes(10))
        zf.writestr("set1/Greek/c01/", "")
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("set2/Greek/c01/a.png", png_bytes(10))  # the same image again
        zf.writestr("set2/Atlantean/c01/z.png", png_bytes(30))
    images = read_zip_folders([one, two])
    assert images.classes == ["Atlantean/c01", "Greek/c01", "Greek/c02"]
    assert images.names == ["Atlantean/c01/z.png", "Greek/c01/a.png", "Greek/c02/b.png"]
    assert [im[0, 0, 0] for im in load_images(images)] == [30, 10, 20]
    assert images.read(2)[0, 0, 0] == 20
    with zipfile.ZipFile(two, "a") as zf:
        zf.writestr("set2/Greek/c02/b.png", png_bytes(99))
    with pytest.raises(LowlabelError, match="other content"):
        read_zip_folders([one, two])
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(LowlabelError, match=r"bad\.zip: not a readable zip"):
        read_zip_folders([bad])


def per_class_reference(labels: list[int], k: int, seed: int) -> list[int]:
    """The official rule written out: seed the global NumPy RNG, permute, keep the first k of each class."""
    np.random.seed(seed)
    order = list(np.random.permutation(len(labels)))
    picked = []
    for c in sorted(set(labels)):
        picked += [i for i in order if labels[i] == c][:k]
    return picked


@pytest.mark.parametrize(("n", "classes", "k", "seed"), [(20, 3, 2, 1), (50, 5, 4, 0), (7, 7, 1, 3)])
def test_per_class_split_follows_the_official_rule(n: int, classes: int, k: int, seed: int) -> None:
    labels = [i % classes for i in range(n)]
    chosen, rest = per_class_split(np.asarray(labels), k, seed)
    assert chosen.tolist() == per_class_reference(labels, k, seed)
    assert sorted(chosen.tolist() + rest.tolist()) == list(range(n))
    assert np.bincount(np.asarray(labels)[chosen]).tolist() == [k] * classes
    with pytest.raises(LowlabelError, match="fewer than"):
        per_class_split(np.asarray(labels), n, seed)


def test_labelled_list_round_trip_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "train"
    for rel in ("a/1.png", "a/2.png", "b/1.png"):
        write_png(root / rel, 1)
    images = read_image_folder(root)
    path = write_labelled_list(tmp_path / "labelled.txt", images, [2, 0])
    assert path.read_text() == "b/1.png\na/1.png\n"
    assert read_labelled_list(path, images).tolist() == [2, 0]
    path.write_text("# chosen by hand\n\na\\2.png\nb/1.png\n")
    assert read_labelled_list(path, images).tolist() == [1, 2]
    path.write_text("a/1.png\nc/9.png\n")
    with pytest.raises(LowlabelError, match=r"labelled.txt, line 2: 'c/9.png'"):
        read_labelled_list(path, images)
    path.write_text("a/1.png\nb/1.png\na/1.png\n")
    with pytest.raises(LowlabelError, match=r"line 3: 'a/1\.png' repeats line 1"):
        read_labelled_list(path, images)
    path.write_text("# nothing\n")
    with pytest.raises(LowlabelError, match="lists no image"):
        read_labelled_list(path, images)


def test_resize_and_center_crop_as_torchvision() -> None:
    image = np.zeros((40, 100, 3), dtype=np.uint8)
    assert resize_short(image, 20).shape == (20, 50, 3)
    assert resize_short(np.zeros((7, 3, 3), dtype=np.uint8), 4).shape == (9, 4, 3)  # int(4 · 7 / 3) = 9
    grid = np.arange(5 * 6).reshape(5, 6, 1).repeat(3, axis=2).astype(np.uint8)
    crop = center_crop(grid, 3)
    # top = round((5 - 3) / 2) = 1, left = round((6 - 3) / 2) = round(1.5) = 2
    assert crop[:, :, 0].tolist() == [[8, 9, 10], [14, 15, 16], [20, 21, 22]]
    padded = center_crop(np.full((2, 2, 3), 7, dtype=np.uint8), 4)
    assert padded[:, :, 0].tolist() == [[0, 0, 0, 0], [0, 7, 7, 0], [0, 7, 7, 0], [0, 0, 0, 0]]


def test_load_images_resizes_then_crops(tmp_path: Path) -> None:
    write_png(tmp_path / "s" / "c" / "a.png", 50, size=(20, 10))
    images = read_image_folder(tmp_path / "s")
    assert load_images(images, [0], short_side=8)[0].shape == (8, 16, 3)
    assert load_images(images, short_side=8, crop=6)[0].shape == (6, 6, 3)


@pytest.mark.realdata
def test_real_fer2013_and_omniglot(shared_data: Path) -> None:
    fer = read_split_folders(shared_data / "fer2013", ("train", "test"))
    assert fer["train"].classes == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert np.bincount(fer["train"].labels).tolist() == [1000, 436, 1000, 1000, 1000, 1000, 1000]
    assert len(fer["test"]) == 3589
    chosen, _ = per_class_split(fer["train"].labels, 4, seed=1)
    assert [im.shape for im in load_images(fer["train"], chosen[:2])] == [(48, 48, 3)] * 2
    omniglot = read_zip_folders(sorted((shared_data / "omniglot_small").glob("*.zip")))
    assert (len(omniglot), len(omniglot.classes)) == (4840, 242)
    assert omniglot.read(0).shape == (105, 105, 3)
