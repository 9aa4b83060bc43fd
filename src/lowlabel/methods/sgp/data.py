"""Readers for SGP's datasets (spec "Datasets and on-disk formats"): 3DMatch fragments, poses and pair lists, and
MegaDepth (CAPS "release-light") cameras and pair lists.

3DMatch: `<scene>/cloud_bin_<i>.{ply,npy,npz}` (npz key `pcd`; points in metres, N x 3), with
`cloud_bin_<i>.info.txt` (a header line, then the fragment's 4 x 4 pose P; a pair's transform is inv(P_dst) @ P_src),
the SGP training list `overlaps.txt` (`cloud_bin_i.ply cloud_bin_j.ply overlap`) and the test `gt.log` (blocks of
`i j n` plus a 4 x 4 matrix M; the official loader uses inv(M) as the i -> j transform).
MegaDepth: `<root>/<scene>/dense<k>/aligned/{images/, img_cam.txt, pairs.txt}`, cameras `name w h fx fy cx cy R(9) t(3)`
(world-to-camera, '#' comments), pairs `img1 img2`; the test split adds a leading sequence column to both files.
"""

from __future__ import annotations

import os
import random
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lowlabel.errors import LowlabelError

_PLY_TYPES = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4", "uint": "u4", "float": "f4",
              "double": "f8", "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4",
              "uint32": "u4", "float32": "f4", "float64": "f8"}
FRAGMENT_SUFFIXES = (".ply", ".npz", ".npy")


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file; a missing, unreadable or non-UTF-8 file is a LowlabelError naming it."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise LowlabelError(f"{path}: not a UTF-8 text file") from None
    except OSError as err:
        raise LowlabelError(f"{path}: cannot read ({err.strerror or err})") from None


def _checked_points(points: np.ndarray, path: Path) -> np.ndarray:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise LowlabelError(f"{path}: point array has shape {points.shape}; a fragment is a non-empty N x 3 array")
    if not np.isfinite(points).all():
        raise LowlabelError(f"{path}: {int((~np.isfinite(points)).any(1).sum())} points hold NaN/inf; drop them")
    return points.astype(np.float64)


def read_ply(path: str | Path) -> np.ndarray:
    """Vertex positions (N, 3) float64 of a PLY file (ascii, binary little- or big-endian); the vertex element must
    come first and have scalar x, y, z properties (other scalar properties, e.g. normals or colours, are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: PLY file not found; check the path")
    raw = path.read_bytes()
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise LowlabelError(f"{path}: not a PLY file (no 'ply' magic or no 'end_header')")
    header = raw[:end].decode("ascii", errors="replace").splitlines()
    body = raw[raw.index(b"\n", end) + 1:]
    fmt, count, props, seen_element = None, 0, [], False
    for line in header:
        words = line.split()
        if words[:1] == ["format"]:
            fmt = words[1]
        elif words[:1] == ["element"]:
            if seen_element and not props:
                raise LowlabelError(f"{path}: the 'vertex' element must come first in the header")
            if seen_element:
                break
            if words[1] != "vertex":
                raise LowlabelError(f"{path}: the first element is '{words[1]}'; the vertex element must come first")
            seen_element, count = True, int(words[2])
        elif words[:1] == ["property"] and seen_element:
            if words[1] == "list" or words[1] not in _PLY_TYPES:
                raise LowlabelError(f"{path}: vertex property '{' '.join(words[1:])}' is not a scalar PLY type")
            props.append((words[2], _PLY_TYPES[words[1]]))
    names = [n for n, _ in props]
    if not {"x", "y", "z"} <= set(names):
        raise LowlabelError(f"{path}: vertex element has properties {names}; x, y and z are needed")
    if fmt == "ascii":
        try:
            table = np.loadtxt(body.decode("ascii").splitlines()[:count], ndmin=2)
        except ValueError as err:
            raise LowlabelError(f"{path}: malformed ascii vertex data ({err})") from None
        if table.shape != (count, len(names)):
            raise LowlabelError(f"{path}: {table.shape[0]} vertex rows of {table.shape[1]} values; the header "
                                f"declares {count} of {len(names)}")
        return _checked_points(table[:, [names.index(a) for a in "xyz"]], path)
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise LowlabelError(f"{path}: PLY format '{fmt}' unknown; expected ascii or binary_little/big_endian")
    order = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(n, order + t) for n, t in props])
    if len(body) < count * dtype.itemsize:
        raise LowlabelError(f"{path}: truncated, {len(body)} bytes of vertex data for {count} vertices "
                            f"({count * dtype.itemsize} needed)")
    table = np.frombuffer(body, dtype=dtype, count=count)
    return _checked_points(np.stack([table[a] for a in "xyz"], axis=1), path)


def read_fragment(path: str | Path) -> np.ndarray:
    """A fragment's points (N, 3) float64 from .ply, .npy or .npz (key `pcd`, the SGP reorganised release)."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: fragment file not found; check the path")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return read_ply(path)
    if suffix in (".npy", ".npz"):
        try:
            return _numpy_fragment(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # numpy's errors for corrupt files
            raise LowlabelError(f"{path}: not a readable {suffix} array file ({err})") from None
    raise LowlabelError(f"{path}: unknown fragment format '{suffix}'; give .ply, .npy or .npz")


def _numpy_fragment(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return _checked_points(np.load(path, allow_pickle=False), path)
    with np.load(path, allow_pickle=False) as z:
        if "pcd" not in z:
            raise LowlabelError(f"{path}: no array 'pcd' in this npz (keys: {sorted(z.files)}); the SGP release "
                                "stores the N x 3 points under 'pcd'")
        return _checked_points(z["pcd"], path)


def _matrix_rows(lines: list[str], start: int, path: Path) -> np.ndarray:
    """The 4 x 4 matrix on lines start .. start+3 (0-based), whitespace-separated."""
    rows = []
    for k in range(start, start + 4):
        if k >= len(lines):
            raise LowlabelError(f"{path}, line {k + 1}: file ends inside a 4 x 4 matrix")
        try:
            row = [float(v) for v in lines[k].split()]
        except ValueError:
            raise LowlabelError(f"{path}, line {k + 1}: not a row of 4 numbers: {lines[k].strip()!r}") from None
        if len(row) != 4:
            raise LowlabelError(f"{path}, line {k + 1}: {len(row)} numbers, a matrix row needs 4")
        rows.append(row)
    return np.array(rows)


def read_info_pose(path: str | Path) -> np.ndarray:
    """The 4 x 4 pose P of a `cloud_bin_<i>.info.txt` (a header line `scene seq start end`, then four rows)."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: pose file not found; 3DMatch fragments come with cloud_bin_<i>.info.txt")
    return _matrix_rows(read_lines(path), 1, path)


def pair_transform(P_src: np.ndarray, P_dst: np.ndarray) -> np.ndarray:
    """The source -> target transform inv(P_dst) @ P_src (4, 4) of two fragment poses."""
    return np.linalg.inv(P_dst) @ P_src


def fragment_index(name: str) -> int:
    """The index of 'cloud_bin_12.ply' (the number after the last '_' of the name without extension)."""
    stem = Path(name).name.split(".")[0]
    tail = stem.rsplit("_", 1)[-1]
    if not tail.isdigit():
        raise LowlabelError(f"'{name}': no fragment index; expected a name such as cloud_bin_12.ply")
    return int(tail)


def list_fragments(scene_dir: str | Path) -> dict[int, Path]:
    """Fragment files of a scene folder by index (cloud_bin_<i>.ply/.npz/.npy; .ply preferred, then .npz)."""
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise LowlabelError(f"{scene_dir}: scene folder not found")
    out: dict[int, Path] = {}
    for suffix in reversed(FRAGMENT_SUFFIXES):
        for p in scene_dir.glob(f"cloud_bin_*{suffix}"):
            if re.fullmatch(r"cloud_bin_\d+", p.name[: -len(suffix)]):
                out[fragment_index(p.name)] = p
    if not out:
        raise LowlabelError(f"{scene_dir}: no cloud_bin_<i>.ply/.npz/.npy fragments here")
    return dict(sorted(out.items()))


@dataclass
class FragmentPair:
    """Two fragments: source (N, 3), target (M, 3) in metres; T (4, 4) source -> target when the poses are known."""

    source: np.ndarray
    target: np.ndarray
    T: np.ndarray | None


def read_fragment_pair(scene_dir: str | Path, i: int, j: int) -> FragmentPair:
    """Fragments i (source) and j (target) of a scene; T = inv(P_j) @ P_i from their .info.txt files when both exist."""
    frags = list_fragments(scene_dir)
    missing = [k for k in (i, j) if k not in frags]
    if missing:
        raise LowlabelError(f"{scene_dir}: no fragment cloud_bin_{missing[0]} (found {len(frags)}: "
                            f"{list(frags)[:8]}...)")
    infos = [Path(scene_dir) / f"cloud_bin_{k}.info.txt" for k in (i, j)]
    T = pair_transform(*(read_info_pose(p) for p in infos)) if all(p.is_file() for p in infos) else None
    return FragmentPair(read_fragment(frags[i]), read_fragment(frags[j]), T)


def read_overlaps(path: str | Path, min_overlap: float = 0.0) -> list[tuple[int, int, float]]:
    """(i, j, overlap) of an SGP `overlaps.txt` (`cloud_bin_i.ply cloud_bin_j.ply overlap`), keeping overlap >=
    `min_overlap` (the official teaching pass uses 0.3)."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: overlaps.txt not found; the SGP 3DMatch release has one per scene folder")
    out = []
    for number, line in enumerate(read_lines(path), start=1):
        words = line.split()
        if not words:
            continue
        try:
            i, j, overlap = fragment_index(words[0]), fragment_index(words[1]), float(words[2])
        except (LowlabelError, ValueError, IndexError):
            raise LowlabelError(f"{path}, line {number}: expected 'cloud_bin_i.ply cloud_bin_j.ply overlap', got "
                                f"{line.strip()!r}") from None
        if overlap >= min_overlap:
            out.append((i, j, overlap))
    return out


@dataclass
class GtPair:
    """A 3DMatch test pair: fragments i -> j, the number of fragments n, T (4, 4) = inv(gt.log matrix)."""

    i: int
    j: int
    n: int
    T: np.ndarray


def read_gt_log(path: str | Path) -> list[GtPair]:
    """The pairs of a 3DMatch `gt.log`: blocks of 5 lines, `i j n` then a 4 x 4 matrix M; T = inv(M) as the official
    loader uses it."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: gt.log not found; it lives in <root>/<scene>-evaluation/")
    lines = [line for line in read_lines(path) if line.strip()]
    if len(lines) % 5:
        raise LowlabelError(f"{path}: {len(lines)} non-blank lines; gt.log has blocks of 5 (i j n, then 4 rows)")
    out = []
    for k in range(0, len(lines), 5):
        head = lines[k].split()
        if len(head) != 3 or not all(h.lstrip("-").isdigit() for h in head):
            raise LowlabelError(f"{path}, block {k // 5 + 1}: header {lines[k].strip()!r} is not 'i j n'")
        out.append(GtPair(int(head[0]), int(head[1]), int(head[2]), np.linalg.inv(_matrix_rows(lines, k + 1, path))))
    return out


# ---------------------------------------------------------------------------------------------------- MegaDepth


@dataclass
class Camera:
    """A MegaDepth camera: K (3, 3), T (4, 4) world-to-camera, image width and height in pixels."""

    K: np.ndarray
    T: np.ndarray
    width: int
    height: int


def read_img_cam(path: str | Path, with_sequence: bool = False) -> dict[str | tuple[str, str], Camera]:
    """Cameras of an `img_cam.txt` by image name (or by (sequence, name) for the test split's leading column)."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: img_cam.txt not found")
    width = 19 + int(with_sequence)
    out: dict[str | tuple[str, str], Camera] = {}
    for number, line in enumerate(read_lines(path), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) != width:
            raise LowlabelError(f"{path}, line {number}: {len(words)} values, expected {width} "
                                f"({'seq ' if with_sequence else ''}name w h fx fy cx cy R(9) t(3))")
        key: str | tuple[str, str] = (words[0], words[1]) if with_sequence else words[0]
        v = words[1 + int(with_sequence):]
        try:
            w, h, fx, fy, cx, cy, *rt = (float(x) for x in v)
        except ValueError:
            raise LowlabelError(f"{path}, line {number}: a camera value is not a number") from None
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = np.reshape(rt[:9], (3, 3)), rt[9:]
        out[key] = Camera(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), T, int(w), int(h))
    return out


def read_pair_list(path: str | Path, with_sequence: bool = False) -> list[tuple[str, ...]]:
    """Rows of a `pairs.txt`: (img1, img2), or (seq, img1, img2) for the test split."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: pairs.txt not found")
    width, out = 2 + int(with_sequence), []
    for number, line in enumerate(read_lines(path), start=1):
        words = line.split()
        if not words:
            continue
        if len(words) < width:
            raise LowlabelError(f"{path}, line {number}: {len(words)} names, expected {width} "
                                f"({'seq ' if with_sequence else ''}img1 img2)")
        out.append(tuple(words[:width]))
    return out


def image_names(images_dir: str | Path, order: str = "listdir") -> list[str]:
    """File names in `images_dir`: in `os.listdir` order (the order the official pseudo-label indices refer to; stable
    on one file system) or 'sorted'."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise LowlabelError(f"{images_dir}: images folder not found")
    if order not in ("listdir", "sorted"):
        raise LowlabelError(f"image order '{order}': use 'listdir' (official indices) or 'sorted'")
    names = os.listdir(images_dir)
    return sorted(names) if order == "sorted" else names


@dataclass
class MegaDepthScene:
    """One `dense<k>/aligned` folder: image names, their cameras (same order), pairs as (N, 2) name indices."""

    folder: Path
    names: list[str]
    cameras: list[Camera]
    pairs: np.ndarray


def read_megadepth_scene(aligned_dir: str | Path, order: str = "listdir") -> MegaDepthScene:
    """images/, img_cam.txt and pairs.txt of a MegaDepth `aligned` folder; every image needs a camera and every
    pair must name listed images."""
    aligned_dir = Path(aligned_dir)
    names = image_names(aligned_dir / "images", order)
    cams = read_img_cam(aligned_dir / "img_cam.txt")
    missing = [n for n in names if n not in cams]
    if missing:
        raise LowlabelError(f"{aligned_dir / 'img_cam.txt'}: no camera for {len(missing)} image(s), e.g. {missing[:3]}")
    index = {n: k for k, n in enumerate(names)}
    pairs = read_pair_list(aligned_dir / "pairs.txt")
    unknown = [p for p in pairs if p[0] not in index or p[1] not in index]
    if unknown:
        raise LowlabelError(f"{aligned_dir / 'pairs.txt'}: {len(unknown)} pair(s) name images not in images/, e.g. "
                            f"{unknown[0]}")
    arr = np.array([(index[a], index[b]) for a, b in pairs], dtype=np.int64).reshape(-1, 2)
    return MegaDepthScene(aligned_dir, names, [cams[n] for n in names], arr)


def megadepth_folders(root: str | Path, scenes: list[str]) -> list[Path]:
    """The `<root>/<scene>/dense<k>/aligned` folders of the given scene ids, sorted."""
    out = []
    for scene in scenes:
        scene_dir = Path(root) / scene
        if not scene_dir.is_dir():
            raise LowlabelError(f"{scene_dir}: MegaDepth scene folder not found")
        found = sorted(d / "aligned" for d in scene_dir.iterdir() if d.name.startswith("dense") and d.is_dir())
        if not found:
            raise LowlabelError(f"{scene_dir}: no dense<k>/ folder inside (CAPS release-light layout expected)")
        out += found
    return out


def teaching_subset(n_pairs: int, sample_rate: float) -> np.ndarray:
    """Indices of the pairs a 2D teaching pass visits: range(n) shuffled by random.Random(15213), the first
    int(sample_rate * n) kept (official `_deterministic_shuffle_`, 0.2 in config_sgp.yml)."""
    if not 0 < sample_rate <= 1:
        raise LowlabelError(f"sample_rate={sample_rate}: must be in (0, 1]")
    order = list(range(n_pairs))
    random.Random(15213).shuffle(order)
    return np.array(order[: int(sample_rate * n_pairs)], dtype=np.int64)
