"""DyML readers on files the test writes (both glued header forms, the benchmark layout, a generic CSV), label
helpers, and the open-set split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowlabel.errors import LowlabelError
from lowlabel.methods.dyml import data


def _png(path: Path, rgb: tuple[int, int, int] = (10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 5, 3), rgb, dtype=np.uint8)).save(path, format="PNG")


def test_label_file_with_glued_four_column_header(tmp_path: Path) -> None:
    path = tmp_path / "label.csv"
    path.write_text("fname, coarse_id, middle_id, fine_id0.jpg, 1, 12, 300\n1.jpg, 1, 12, 301\n\n2.jpg, 0, 3\n"
                    "3.jpg, 0, 4, 7\n")
    assert data.read_label_file(path) == [("0.jpg", 1, 12, 300), ("1.jpg", 1, 12, 301), ("3.jpg", 0, 4, 7)]


def test_label_file_with_glued_two_column_header(tmp_path: Path) -> None:
    path = tmp_path / "query.csv"
    path.write_text("fname, labels0.jpg, 5\n1.jpg, 6\n   \n2.jpg\n3.jpg,7")  # no final newline, a 1-field line
    assert data.read_label_file(path) == [("0.jpg", 5), ("1.jpg", 6), ("3.jpg", 7)]


@pytest.mark.parametrize("header", ["fname, coarse_id, middle_id, fine_id\n", "FNAME,labels\n", ""])
def test_label_file_with_header_on_its_own_line_or_none(tmp_path: Path, header: str) -> None:
    width = 2 if "labels" in header else 4
    rows = ["a.png, 1, 2, 3", "b.png, 4, 5, 6"] if width == 4 else ["a.png, 1", "b.png, 4"]
    path = tmp_path / "l.csv"
    path.write_text(header + "\n".join(rows) + "\n")
    got = data.read_label_file(path)
    assert [r[0] for r in got] == ["a.png", "b.png"] and got[1][1] == 4 and len(got[0]) == width


def test_label_file_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("fname, labels0.jpg, 5\n1.jpg, six\n")
    with pytest.raises(LowlabelError, match=r"bad.csv, line 2: .*not integers"):
        data.read_label_file(path)
    path.write_text("fname, labels0.jpg, 5\n1.jpg, 6, 7\n")
    with pytest.raises(LowlabelError, match=r"line 2: 3 fields where the file has 2"):
        data.read_label_file(path)
    path.write_text("fname, labels\n\n")
    with pytest.raises(LowlabelError, match="no record"):
        data.read_label_file(path)
    with pytest.raises(LowlabelError, match="not found"):
        data.read_label_file(tmp_path / "missing.csv")


def _dyml_tree(root: Path) -> None:
    (root / "train" / "imgs").mkdir(parents=True)
    (root / "train" / "label.csv").write_text(
        "fname, coarse_id, middle_id, fine_id0.png, 7, 20, 100\n1.png, 7, 20, 101\n2.png, 8, 21, 102\n")
    for i, rgb in enumerate([(10, 20, 30), (1, 2, 3), (4, 5, 6)]):
        _png(root / "train" / "imgs" / f"{i}.png", rgb)
    for level in data.LEVELS:
        for part in data.PARTS:
            (root / f"bmk_{level}" / part).mkdir(parents=True)
            (root / f"bmk_{level}" / f"{part}.csv").write_text("fname, labels0.png, 3\n1.png, 4\n")
            for i in range(2):
                _png(root / f"bmk_{level}" / part / f"{i}.png")


def test_dyml_layout_and_channel_flag(tmp_path: Path) -> None:
    _dyml_tree(tmp_path)
    train = data.read_dyml_train(tmp_path)
    assert train.labels.tolist() == [[100, 20, 7], [101, 20, 7], [102, 21, 8]]  # (fine, middle, coarse)
    assert train.paths[2] == tmp_path / "train" / "imgs" / "2.png"
    assert train.image(0)[0, 0].tolist() == [30, 20, 10]  # official loader: channels reversed
    stored = data.read_dyml_train(tmp_path, swap_channels=False)
    assert stored.image(0)[0, 0].tolist() == [10, 20, 30]  # [H] / CLCD: as stored
    gallery = data.read_dyml_benchmark(tmp_path, "middle", "gallery")
    assert gallery.labels.tolist() == [[3], [4]] and gallery.paths[1] == tmp_path / "bmk_middle" / "gallery" / "1.png"
    with pytest.raises(LowlabelError, match="level is one of"):
        data.read_dyml_benchmark(tmp_path, "species", "query")
    (tmp_path / "train" / "imgs" / "1.png").unlink()
    with pytest.raises(LowlabelError, match=r"1 listed image\(s\) are not in"):
        data.read_dyml_train(tmp_path)
    assert len(data.read_dyml_train(tmp_path, check_files=False)) == 3


def test_product_test_set_and_hierarchy_check(tmp_path: Path) -> None:
    folder = tmp_path / "mini-bmk_all_in_one"
    (folder / "imgs").mkdir(parents=True)
    (folder / "label.csv").write_text("fname, coarse_id, middle_id, fine_id0.png, 1, 2, 3\n1.png, 1, 2, 4\n")
    for i in range(2):
        _png(folder / "imgs" / f"{i}.png")
    assert data.read_dyml_product_test(tmp_path).labels.tolist() == [[3, 2, 1], [4, 2, 1]]
    (tmp_path / "train" / "imgs").mkdir(parents=True)
    (tmp_path / "train" / "label.csv").write_text("fname, coarse_id, middle_id, fine_id0.png, 1, 2, 3\n"
                                                  "1.png, 1, 5, 3\n")
    with pytest.raises(LowlabelError, match=r"fine class 3 has middle labels \[2, 5\]"):
        data.read_dyml_train(tmp_path, check_files=False)


def test_generic_csv_with_names_and_relative_paths(tmp_path: Path) -> None:
    for name in ("a.png", "sub/b.png", "c.png"):
        _png(tmp_path / name)
    path = tmp_path / "h.csv"
    path.write_text('path,fine,middle,coarse\na.png,corolla,toyota,car\n"sub/b.png",f150,ford,truck\n\n'
                    "c.png,camry,toyota,car\n")
    got = data.read_hierarchy_csv(path)
    assert got.names == (["camry", "corolla", "f150"], ["ford", "toyota"], ["car", "truck"])
    assert got.labels.tolist() == [[1, 1, 0], [2, 0, 1], [0, 1, 0]]
    assert got.paths[1] == tmp_path / "sub" / "b.png" and not got.swap_channels
    assert got.image(0)[0, 0].tolist() == [10, 20, 30]
    path.write_text("a.png,10,2,1\nc.png,9,2,1\n")  # integer ids sort numerically
    assert data.read_hierarchy_csv(path).names[0] == ["9", "10"]
    path.write_text("a.png,1,2\n")
    with pytest.raises(LowlabelError, match="line 1: expected 4 non-empty fields"):
        data.read_hierarchy_csv(path)
    path.write_text("a.png,x,m1,c\nc.png,x,m2,c\n")
    with pytest.raises(LowlabelError, match="needs one middle label"):
        data.read_hierarchy_csv(path)
    path.write_text("nothere.png,x,m,c\n")
    with pytest.raises(LowlabelError, match=r"1 image\(s\) not found"):
        data.read_hierarchy_csv(path)


def test_contiguous_labels_and_open_set_split() -> None:
    labels = np.array([[30, 5, 9], [10, 5, 9], [30, 5, 9], [20, 7, 2]])
    remapped, originals = data.contiguous_labels(labels)
    assert remapped.tolist() == [[2, 0, 1], [0, 0, 1], [2, 0, 1], [1, 1, 0]]
    assert [o.tolist() for o in originals] == [[10, 20, 30], [5, 7], [2, 9]]
    # 4 middle classes x 8 fine classes x 3 samples: 2 fine classes of every middle class held out
    fine = np.repeat(np.arange(32), 3)
    labels = np.stack([fine, fine // 8, fine // 16], axis=1)
    train, test = data.open_set_split(labels, holdout=0.25, seed=3)
    held = np.unique(labels[test, 0])
    assert len(held) == 8 and np.bincount(held // 8).tolist() == [2, 2, 2, 2]
    assert set(train) | set(test) == set(range(96)) and not set(labels[train, 0]) & set(held)
    again = data.open_set_split(labels, holdout=0.25, seed=3)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(data.open_set_split(labels, holdout=0.25, seed=4)[1], test)
    with pytest.raises(LowlabelError, match="holdout"):
        data.open_set_split(labels, holdout=1.0)
