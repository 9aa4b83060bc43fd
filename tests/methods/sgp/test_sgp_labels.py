"""SGP pseudo-label files: official layout and line format, exact round trips, atomic replacement, the verified
filter, and errors naming the file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lowlabel.errors import LowlabelError
from lowlabel.methods.sgp.labels import (
    Label2D,
    Label3D,
    label_path,
    read_labels_2d,
    read_labels_3d,
    round_name,
    write_labels_2d,
    write_labels_3d,
)


def test_round_names_and_paths(tmp_path: Path) -> None:
    assert [round_name(k) for k in (-1, 0, 1, 12)] == ["bs", "00", "01", "12"]
    assert label_path(tmp_path, 1, "0000/dense0/aligned") == tmp_path / "01/0000/dense0/aligned/pseudo-label.log"
    with pytest.raises(LowlabelError, match="meta-iteration"):
        round_name(-2)


def test_2d_round_trip_is_exact_and_the_line_is_official(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = [Label2D(3, 7, 150, 400, rng.normal(size=(3, 3))), Label2D(0, 1, 20, 99, np.eye(3) / 3)]
    path = label_path(tmp_path, -1, "sceneA")
    write_labels_2d(path, labels)
    first = path.read_text().splitlines()[0].split(" ")
    assert first[:4] == ["3", "7", "150", "400"] and len(first) == 13
    assert float(first[5]) == labels[0].F[0, 1]  # row-major
    back = read_labels_2d(path)
    assert [(b.i, b.j, b.num_inliers, b.num_matches) for b in back] == [(3, 7, 150, 400), (0, 1, 20, 99)]
    for a, b in zip(labels, back, strict=True):
        np.testing.assert_array_equal(a.F, b.F)
    assert [(b.i, b.j) for b in read_labels_2d(path, verified=True)] == [(3, 7)]


def test_3d_round_trip_and_verified_filter(tmp_path: Path) -> None:
    T = np.eye(4)
    T[:3, 3] = [0.1, -2.0, 1 / 3]
    labels = [Label3D(0, 5, 0.3, T), Label3D(2, 9, 0.29999, np.eye(4))]
    path = label_path(tmp_path, 0, "7-scenes-chess@seq-01")
    write_labels_3d(path, labels)
    back = read_labels_3d(path)
    assert [(b.i, b.j, b.confidence) for b in back] == [(0, 5, 0.3), (2, 9, 0.29999)]
    np.testing.assert_array_equal(back[0].T, T)
    assert [b.j for b in read_labels_3d(path, verified=True)] == [5]


def test_reads_a_file_written_the_official_way(tmp_path: Path) -> None:
    # the official writer: '{} {} {} '.format(i, j, overlap) + ' '.join(map(str, T.flatten())) with numpy floats
    T = np.array([[0.9, -0.1, 0.0, 1.5], [0.1, 0.9, 0.0, -0.25], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    path = tmp_path / "pseudo-label.log"
    path.write_text(f"4 11 {np.float64(0.4567)} " + " ".join(map(str, T.flatten())) + "\n\n")
    (lab,) = read_labels_3d(path)
    assert (lab.i, lab.j, lab.confidence) == (4, 11, 0.4567)
    np.testing.assert_array_equal(lab.T, T)
    F = np.arange(9.0).reshape(3, 3) / 7
    path.write_text(f"1 2 {np.int64(35)} 100 " + " ".join(map(str, F.flatten())) + "\n")
    (lab2,) = read_labels_2d(path)
    assert (lab2.num_inliers, lab2.num_matches) == (35, 100)
    np.testing.assert_array_equal(lab2.F, F)


def test_writes_replace_atomically(tmp_path: Path) -> None:
    path = tmp_path / "bs" / "s" / "pseudo-label.log"
    write_labels_3d(path, [Label3D(0, 1, 0.5, np.eye(4))] * 3)
    write_labels_3d(path, [Label3D(1, 2, 0.9, np.eye(4))])
    assert [(b.i, b.j) for b in read_labels_3d(path)] == [(1, 2)]
    assert sorted(p.name for p in path.parent.iterdir()) == ["pseudo-label.log"]  # no temporary file left
    with pytest.raises(LowlabelError, match="shape"):
        write_labels_3d(path, [Label3D(0, 1, 0.5, np.eye(3))])
    assert [(b.i, b.j) for b in read_labels_3d(path)] == [(1, 2)]  # a failed write leaves the old file
    assert sorted(p.name for p in path.parent.iterdir()) == ["pseudo-label.log"]


@pytest.mark.parametrize(("content", "message"), [
    ("0 1 0.5 1 0 0\n", "line 1: 6 values, expected 19"),
    ("0 1 0.5" + " 1" * 16 + "\n0 1 x" + " 1" * 16 + "\n", "line 2: a value is not a number"),
    ("0.5 1 0.5" + " 1" * 16 + "\n", "line 1: index 0.5"),
])
def test_bad_3d_lines_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "pseudo-label.log"
    path.write_text(content)
    with pytest.raises(LowlabelError, match=message):
        read_labels_3d(path)


def test_missing_label_file(tmp_path: Path) -> None:
    with pytest.raises(LowlabelError, match="run the teaching round"):
        read_labels_2d(tmp_path / "nope.log")
