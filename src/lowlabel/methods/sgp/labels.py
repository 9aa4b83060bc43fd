"""SGP pseudo-label files in the official layout (spec "Pseudo-label files"), written atomically.

`<pseudo_label_dir>/<bs|00|01..>/<scene path>/pseudo-label.log`, one pair per line, values separated by spaces:
2D `i j num_inliers num_matches F00 .. F22`, 3D `i j confidence T00 .. T33` (row-major). i and j index the scene's
images (2D: the `os.listdir` order of images/) or fragments (3D: cloud_bin_<i>). Floats are written with `repr`, so
a file read back gives the very same numbers; a file the official code wrote (Python `str` of numpy floats) reads
the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lowlabel.errors import LowlabelError
from lowlabel.files import write_text
from lowlabel.methods.sgp.data import read_lines
from lowlabel.methods.sgp.teacher import verify_2d, verify_3d

LABEL_FILE = "pseudo-label.log"


@dataclass
class Label2D:
    """One 2D pseudo-label: images i -> j, F (3, 3) (x_j^T F x_i = 0), RANSAC inliers among the matches."""

    i: int
    j: int
    num_inliers: int
    num_matches: int
    F: np.ndarray


@dataclass
class Label3D:
    """One 3D pseudo-label: fragments i -> j, T (4, 4) source -> target, confidence (ICP fitness x size ratio)."""

    i: int
    j: int
    confidence: float
    T: np.ndarray


def round_name(meta_iter: int) -> str:
    """Folder of a teaching round: -1 -> 'bs' (bootstrap), k >= 0 -> 'k' with two digits ('00', '01', ...)."""
    if meta_iter < -1:
        raise LowlabelError(f"meta-iteration {meta_iter}: use -1 for the bootstrap round or 0, 1, ...")
    return "bs" if meta_iter == -1 else f"{meta_iter:02d}"


def label_path(root: str | Path, meta_iter: int, scene: str) -> Path:
    """<root>/<bs|00|..>/<scene>/pseudo-label.log (scene may be a relative path such as '0000/dense0/aligned')."""
    return Path(root) / round_name(meta_iter) / scene / LABEL_FILE


def _floats(values: np.ndarray) -> str:
    return " ".join(repr(float(v)) for v in np.asarray(values, dtype=np.float64).ravel())


def write_labels_2d(path: str | Path, labels: Iterable[Label2D]) -> None:
    """Write (replace) a 2D pseudo-label file atomically."""
    lines = []
    for lab in labels:
        if np.shape(lab.F) != (3, 3):
            raise LowlabelError(f"{path}: label {lab.i} {lab.j} has F of shape {np.shape(lab.F)}; need (3, 3)")
        lines.append(f"{int(lab.i)} {int(lab.j)} {int(lab.num_inliers)} {int(lab.num_matches)} {_floats(lab.F)}")
    write_text(path, "".join(line + "\n" for line in lines))


def write_labels_3d(path: str | Path, labels: Iterable[Label3D]) -> None:
    """Write (replace) a 3D pseudo-label file atomically."""
    lines = []
    for lab in labels:
        if np.shape(lab.T) != (4, 4):
            raise LowlabelError(f"{path}: label {lab.i} {lab.j} has T of shape {np.shape(lab.T)}; need (4, 4)")
        lines.append(f"{int(lab.i)} {int(lab.j)} {float(lab.confidence)!r} {_floats(lab.T)}")
    write_text(path, "".join(line + "\n" for line in lines))


def _rows(path: Path, width: int, layout: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line, checking the field count and that every field is a number."""
    if not path.is_file():
        raise LowlabelError(f"{path}: pseudo-label file not found; run the teaching round that writes it first")
    rows = []
    for number, line in enumerate(read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != width:
            raise LowlabelError(f"{path}, line {number}: {len(fields)} values, expected {width} ({layout})")
        try:
            [float(v) for v in fields]
        except ValueError:
            raise LowlabelError(f"{path}, line {number}: a value is not a number ({layout})") from None
        rows.append((number, fields))
    return rows


def _index(value: str, path: Path, number: int) -> int:
    """An image/fragment index, written as an int (or an integral float)."""
    v = float(value)
    if v != int(v) or v < 0:
        raise LowlabelError(f"{path}, line {number}: index {value} is not a non-negative integer")
    return int(v)


def read_labels_2d(path: str | Path, verified: bool = False) -> list[Label2D]:
    """Read a 2D pseudo-label file; with `verified`, only the labels the official verifier keeps (>= 100 matches,
    inlier ratio >= 0.3)."""
    path = Path(path)
    out = []
    for number, f in _rows(path, 13, "i j num_inliers num_matches F00 .. F22"):
        lab = Label2D(_index(f[0], path, number), _index(f[1], path, number), int(float(f[2])), int(float(f[3])),
                      np.array([float(v) for v in f[4:]]).reshape(3, 3))
        if not verified or verify_2d(lab.num_inliers, lab.num_matches):
            out.append(lab)
    return out


def read_labels_3d(path: str | Path, verified: bool = False) -> list[Label3D]:
    """Read a 3D pseudo-label file; with `verified`, only the labels with confidence >= 0.3."""
    path = Path(path)
    out = []
    for number, f in _rows(path, 19, "i j confidence T00 .. T33"):
        lab = Label3D(_index(f[0], path, number), _index(f[1], path, number), float(f[2]),
                      np.array([float(v) for v in f[3:]]).reshape(4, 4))
        if not verified or verify_3d(lab.confidence):
            out.append(lab)
    return out
