"""FDRL data: the RAF-DB basic layout, a generic CSV (path,label), class folders (FER2013 split prefixes), images.

RAF-DB basic (spec "Datasets and on-disk formats"): `<root>/EmoLabel/list_patition_label.txt` (the official
misspelling; `list_partition_label.txt` and a list file directly under `<root>` are accepted too) with lines
`train_00001.jpg 5`, labels 1..7 = surprise, fear, disgust, happiness, sadness, anger, neutral (0-based here); the
split is the `train`/`test` file-name prefix. Images: `<root>/Image/aligned/<stem>_aligned.jpg` (the 100×100 aligned
crops the unofficial loader reads), else `<root>/Image/original/<name>`.
Class folders: `<root>/<class>/*.jpg`, class k = k-th folder name in sorted order (ImageFolder order). FER2013 as
laid out in ../shared/data/fer2013: `<root>/{train,validation,test}/<class>/` with the official split named by the
file-name prefix (`Training_`, `PublicTest_`, `PrivateTest_`), checked by `read_fer2013`.
`read_split` picks the layout of a folder; `faces_world` is the adapter to the built-in faces world.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lowlabel.data.io import list_images, read_image
from lowlabel.data.synth.faces import EXPRESSIONS, FacesConfig, FacesDataset
from lowlabel.errors import LowlabelError
from lowlabel.files import read_text

RAF_CLASSES: tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
RAF_LIST_NAMES: tuple[str, ...] = ("list_patition_label.txt", "list_partition_label.txt")
FER2013_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
FER2013_PREFIXES: dict[str, str] = {"train": "Training_", "validation": "PublicTest_", "test": "PrivateTest_"}
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ExpressionSet:
    """Image paths, integer labels (N,) int64 in [0, len(classes)), and the class names."""

    paths: list[Path]
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)


def _check_exist(paths: Sequence[Path], source: Path, lines: Sequence[int] | None = None) -> None:
    """Raise a LowlabelError naming the first missing image (and its line of `source`) and the missing count."""
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        i = missing[0]
        where = f" (line {lines[i]})" if lines is not None else ""
        raise LowlabelError(f"{paths[i]}: image not found, named by {source}{where}; {len(missing)} of {len(paths)} "
                            "listed images are missing: fix the paths or add the files")


def _raf_list(root: Path) -> Path:
    for folder in (root / "EmoLabel", root):
        for name in RAF_LIST_NAMES:
            if (folder / name).is_file():
                return folder / name
    raise LowlabelError(f"{root}: no EmoLabel/list_patition_label.txt here; expected the RAF-DB basic layout "
                        "<root>/EmoLabel/list_patition_label.txt and <root>/Image/aligned/")


def _raf_image(root: Path, name: str) -> Path:
    aligned = root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg"
    original = root / "Image" / "original" / name
    return original if not aligned.is_file() and original.is_file() else aligned


def read_raf_basic(root: str | Path, split: str = "train") -> ExpressionSet:
    """The `split` ("train" or "test") images of a RAF-DB basic folder, labels 1..7 mapped to 0..6 (RAF_CLASSES).

    Errors name the list file and line for a malformed line, a label outside 1..7 or a name with neither prefix,
    and the first missing image with the number missing.
    """
    if split not in ("train", "test"):
        raise LowlabelError(f"split='{split}': RAF-DB basic has the splits 'train' and 'test'")
    root = Path(root)
    if not root.is_dir():
        raise LowlabelError(f"{root}: RAF-DB folder not found; give the folder holding EmoLabel/ and Image/")
    list_file = _raf_list(root)
    paths, labels, lines = [], [], []
    for n, line in enumerate(read_text(list_file, "RAF-DB list file").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(RAF_CLASSES):
            raise LowlabelError(f"{list_file}: line {n} is '{line.strip()}'; expected '<image name> <label 1-7>'")
        name = parts[0]
        if not name.startswith(("train", "test")):
            raise LowlabelError(f"{list_file}: line {n} names '{name}', which starts with neither 'train' nor "
                                "'test'; RAF-DB takes the split from that prefix")
        if name.startswith(split):
            paths.append(_raf_image(root, name))
            labels.append(int(parts[1]) - 1)
            lines.append(n)
    if not paths:
        raise LowlabelError(f"{list_file}: no '{split}' image listed")
    _check_exist(paths, list_file, lines)
    return ExpressionSet(paths, np.asarray(labels, np.int64), RAF_CLASSES)


def read_csv_labels(path: str | Path, *, classes: Sequence[str] | None = None) -> ExpressionSet:
    """A CSV of `path,label` rows (an optional header row `path,label`; relative paths are relative to the CSV).

    Labels are class names, mapped to `classes` (default: the sorted distinct names), or, if every label is an
    integer and `classes` is not given, 0-based class indices (classes "0".."K-1").
    """
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: label CSV not found; write one 'image path,label' row per image")
    rows: list[tuple[int, str, str]] = []
    try:
        table = list(csv.reader(io.StringIO(read_text(path, "label CSV"), newline="")))
    except csv.Error as err:
        raise LowlabelError(f"{path}: not a readable CSV ({err}); write one 'image path,label' row per image") from None
    for n, row in enumerate(table, start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise LowlabelError(f"{path}: line {n} is {row}; expected two columns 'image path,label'")
        if n == 1 and [c.strip().lower() for c in row] == ["path", "label"]:
            continue
        rows.append((n, row[0].strip(), row[1].strip()))
    if not rows:
        raise LowlabelError(f"{path}: no 'image path,label' row in the file")
    names = [r[2] for r in rows]
    if classes is None and all(s.lstrip("-").isdigit() for s in names):
        labels = [int(s) for s in names]
        bad = next((r for r, y in zip(rows, labels, strict=True) if y < 0), None)
        if bad is not None:
            raise LowlabelError(f"{path}: line {bad[0]} has the negative label {bad[2]}; integer labels are 0-based")
        classes = tuple(str(k) for k in range(max(labels) + 1))
    else:
        classes = tuple(classes) if classes is not None else tuple(sorted(set(names)))
        index = {c: k for k, c in enumerate(classes)}
        unknown = next((r for r in rows if r[2] not in index), None)
        if unknown is not None:
            raise LowlabelError(f"{path}: line {unknown[0]} has the label '{unknown[2]}', not one of {list(classes)}")
        labels = [index[s] for s in names]
    paths = [Path(p) if Path(p).is_absolute() else path.parent / p for _, p, _ in rows]
    _check_exist(paths, path, [r[0] for r in rows])
    return ExpressionSet(paths, np.asarray(labels, np.int64), tuple(classes))


def read_class_folders(root: str | Path, *, classes: Sequence[str] | None = None,
                       prefix: str | None = None) -> ExpressionSet:
    """Images of `root/<class>/` (searched recursively), class k = k-th of `classes` (default: sorted folders).

    With `prefix`, every file name must start with it (an error names the first file that does not: a file of
    another split in this folder). A listed class without a folder, and an empty class folder, are errors.
    """
    root = Path(root)
    if not root.is_dir():
        raise LowlabelError(f"{root}: image folder not found; give a folder with one sub-folder of images per class")
    loose = list_images(root, recursive=False)
    if loose:
        raise LowlabelError(f"{loose[0]}: image directly under {root}; put every image in its class folder")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = tuple(classes) if classes is not None else tuple(folders)
    paths, labels = [], []
    for k, name in enumerate(classes):
        if not (root / name).is_dir():
            raise LowlabelError(f"{root / name}: class folder not found; folders present: {folders}")
        files = list_images(root / name)
        if not files:
            raise LowlabelError(f"{root / name}: class folder holds no images; remove it or add images")
        paths += files
        labels += [k] * len(files)
    if prefix is not None:
        stray = next((p for p in paths if not p.name.startswith(prefix)), None)
        if stray is not None:
            raise LowlabelError(f"{stray}: file name lacks the split prefix '{prefix}'; move it to its own split")
    return ExpressionSet(paths, np.asarray(labels, np.int64), classes)


def read_fer2013(root: str | Path, split: str = "train") -> ExpressionSet:
    """FER2013 class folders `<root>/<split>/<class>/`, split in train/validation/test (Training_/PublicTest_/
    PrivateTest_ file names, checked), classes FER2013_CLASSES in that (sorted) order."""
    if split not in FER2013_PREFIXES:
        raise LowlabelError(f"split='{split}': FER2013 has the splits {', '.join(FER2013_PREFIXES)}")
    return read_class_folders(Path(root) / split, classes=FER2013_CLASSES, prefix=FER2013_PREFIXES[split])


def load_images(paths: Sequence[Path], size: int, *, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Decode image files (errors name a corrupt or missing file) to (N, 3, size, size) float32, normalised by
    `mean`/`std` (ImageNet by default, as the spec's input pipeline). Greyscale becomes 3 equal channels; the
    resize is bilinear with antialiasing (the unofficial code: PIL Resize((224, 224)))."""
    if size < 1:
        raise LowlabelError(f"size={size}: the image size must be positive")
    out = torch.empty(len(paths), 3, size, size)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    for i, p in enumerate(paths):  # decoding is per file; the tensor work is not the hot path
        x = torch.from_numpy(read_image(p)).permute(2, 0, 1).float().div_(255.0)
        if x.shape[1:] != (size, size):
            x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        out[i] = (x - m) / s
    return out


def layout(root: str | Path) -> str:
    """The layout of a dataset folder: "rafdb" (EmoLabel/ list file), "fer2013" (train/ and test/ class folders with
    the FER2013 class names), "csv" (train.csv and test.csv) or "folders" (train/ and test/ class folders)."""
    root = Path(root)
    if not root.is_dir():
        raise LowlabelError(f"{root}: dataset folder not found")
    if any((folder / name).is_file() for folder in (root / "EmoLabel", root) for name in RAF_LIST_NAMES):
        return "rafdb"
    if (root / "train.csv").is_file() and (root / "test.csv").is_file():
        return "csv"
    if (root / "train").is_dir() and (root / "test").is_dir():
        names = {p.name for p in (root / "train").iterdir() if p.is_dir()}
        return "fer2013" if names == set(FER2013_CLASSES) else "folders"
    raise LowlabelError(f"{root}: not a dataset layout FDRL reads; give a RAF-DB basic folder (EmoLabel/ and Image/), "
                        "a folder with train.csv and test.csv (path,label rows), or one with train/<class>/ and "
                        "test/<class>/ image folders")


def read_split(root: str | Path, split: str) -> ExpressionSet:
    """The `split` ("train" or "test") of a dataset folder in any layout `layout` knows (FER2013: test = the
    PrivateTest images of `test/`, checked by their prefix)."""
    if split not in ("train", "test"):
        raise LowlabelError(f"split='{split}': use 'train' or 'test'")
    root = Path(root)
    kind = layout(root)
    if kind == "rafdb":
        return read_raf_basic(root, split)
    if kind == "fer2013":
        return read_fer2013(root, split)
    if kind == "csv":
        train = read_csv_labels(root / "train.csv")
        return train if split == "train" else read_csv_labels(root / "test.csv", classes=train.classes)
    folders = (p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    return read_class_folders(root / split, classes=tuple(sorted(folders)))


def subset_per_class(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `per_class` images of each class, drawn without replacement by a generator seeded
    with `seed` (a fixed subset: the same for every training seed). per_class <= 0 keeps everything."""
    if per_class <= 0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == k))[:per_class] for k in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def load_image_bytes(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Decode image files (errors name a corrupt or missing file) to uint8 (N, 3, size, size): greyscale becomes 3
    equal channels, the resize is bilinear with antialiasing. uint8 keeps a large set in memory (4x less than float)."""
    if size < 1:
        raise LowlabelError(f"size={size}: the image size must be positive")
    out = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    for i, p in enumerate(paths):  # decoding is per file; the tensor work is not the hot path
        x = torch.from_numpy(read_image(p)).permute(2, 0, 1)
        if x.shape[1:] != (size, size):
            x = F.interpolate(x[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)[0].round_().clamp_(0, 255).to(torch.uint8)
        out[i] = x
    return out


def normalise_images(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 (N, 3, H, W) in [0, 1], standardised by `mean`/`std` (ImageNet by default)."""
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s


def faces_world(n_identities: int, per_identity: int, *, seed: int, size: int,
                intensity_range: Sequence[float] = (0.6, 1.0), degraded: bool = False,
                expressions: str = "classic") -> dict:
    """The faces world as an expression dataset: images uint8 (N, 3, size, size), labels (N,) int64 (index into
    EXPRESSIONS), identities (N,) int64, classes = EXPRESSIONS.

    FDRL's adapter options: `intensity_range` (the world's default is 0.6-1.0; lower values give the fine-grained
    deformations the paper's decomposition is for) and `degraded` (the world's SDD-FIQA degradations; off by
    default here: with them 75% of faces are blurred, noised or occluded, often past recognising the expression,
    while expression datasets hold mostly clean aligned faces), and `expressions`, the world's expression table
    ("classic", or "action_units": each expression a sum of small facial action units shared across expressions).
    """
    lo, hi = (float(v) for v in intensity_range)
    cfg = FacesConfig(size=size, intensity_range=(lo, hi), clean_fraction=0.25 if degraded else 1.0,
                      expressions=expressions)
    ds = FacesDataset(n_identities, per_identity, seed=seed, cfg=cfg)
    samples = [ds.sample(i) for i in range(len(ds))]
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()
    return {"images": images, "labels": torch.tensor([s.expression for s in samples], dtype=torch.int64),
            "identities": torch.tensor([s.identity for s in samples], dtype=torch.int64), "classes": EXPRESSIONS}
