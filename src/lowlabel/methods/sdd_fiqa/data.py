"""SDD-FIQA data: a folder per identity (CASIA-WebFace / MS1M ImageFolder layout), label files, the faces world.

Official layout (spec "Datasets and on-disk formats"): `root/<identity>/<image>.jpg`, aligned face crops. Identity
labels are the folder names in sorted order (torchvision ImageFolder order). Pseudo-labels are written as a CSV
`path,identity,quality` (the official tab-separated `<path>\\t<Q>` file is also readable by `read_labels`).
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lowlabel.data.face_embedding import embed_files
from lowlabel.data.io import list_images, read_image
from lowlabel.errors import LowlabelError
from lowlabel.files import write_bytes
from lowlabel.methods.sdd_fiqa.extractors import make_extractor, to_model_input


@dataclass(frozen=True)
class IdentityFolder:
    """Image paths (sorted by identity folder, then file name), integer identity labels (N,), and folder names."""

    paths: list[Path]
    labels: np.ndarray
    names: list[str]


def read_identity_folders(root: str | Path) -> IdentityFolder:
    """List `root/<identity>/<image>` files; identity k is the k-th folder name in sorted order.

    Hidden folders (e.g. the embedding cache `.lowlabel_cache`) are skipped. Images directly under `root` and empty
    identity folders are errors that name them.
    """
    root = Path(root)
    if not root.is_dir():
        raise LowlabelError(f"{root}: data folder not found; give a folder with one sub-folder of images per identity")
    loose = list_images(root, recursive=False)
    if loose:
        raise LowlabelError(f"{loose[0]}: image directly under {root}; put every image in its identity's folder "
                            "(root/<identity>/<image>)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for k, folder in enumerate(folders):
        files = list_images(folder, recursive=True)
        if not files:
            raise LowlabelError(f"{folder}: identity folder holds no images; remove it or add images")
        paths += files
        labels += [k] * len(files)
    if not paths:
        raise LowlabelError(f"{root}: no identity folders with images found")
    return IdentityFolder(paths=paths, labels=np.asarray(labels, np.int64), names=[f.name for f in folders])


def load_images(paths: list[Path], size: int) -> torch.Tensor:
    """Decode files (errors name the corrupt file) to (N, 3, size, size) float32 in [-1, 1]."""
    return to_model_input([read_image(p) for p in paths], size, torch.device("cpu"))


class LabelledImages(torch.utils.data.Dataset):
    """(image (3, size, size) in [-1, 1], pseudo-label) pairs, each image decoded from its file when asked for."""

    def __init__(self, paths: list[Path], quality: np.ndarray, size: int) -> None:
        if len(paths) != len(quality):
            raise LowlabelError(f"{len(paths)} image paths but {len(quality)} labels; give one label per image")
        self.paths, self.quality, self.size = paths, torch.from_numpy(quality), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return load_images([self.paths[i]], self.size)[0], self.quality[i]


def labelled_images(labels_file: str | Path, root: str | Path, size: int) -> LabelledImages:
    """The images of a label file (`read_labels`), relative paths taken under `root`, with their pseudo-labels.
    Every image must exist (checked here, before any training step)."""
    paths, quality = read_labels(labels_file)
    full = [p if p.is_absolute() else Path(root) / p for p in paths]
    missing = [p for p in full if not p.is_file()]
    if missing:
        raise LowlabelError(f"{labels_file}: {len(missing)} labelled image(s) not found, e.g. {missing[0]}; label "
                            f"the folder you train on (relative paths are taken under {root})")
    return LabelledImages(full, quality, size)


def csv_bytes(rows: list[list[object]]) -> bytes:
    """CSV text as bytes; file names that are not valid UTF-8 keep their original bytes (surrogateescape)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogateescape")


def write_csv(path: str | Path, header: list[str], rows: list[list[object]]) -> Path:
    """Write a CSV atomically (`lowlabel.files`): the file appears whole or not at all."""
    return write_bytes(path, csv_bytes([header, *rows]))


def write_labels(path: str | Path, paths: list[Path], labels: np.ndarray, quality: np.ndarray) -> Path:
    """Write `path,identity,quality` CSV rows (quality NaN for skipped singletons), atomically."""
    return write_csv(path, ["path", "identity", "quality"],
                     [[str(p), y, f"{q:.6f}"] for p, y, q in zip(paths, labels.tolist(), quality.tolist(),
                                                                    strict=True)])


def _read_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, str, float]]:
    """(line number, path, value) of every row of a CSV with a `path` column and the first of `columns` it has, or
    of official `<path>\t<value>` / `<path> <value>` lines; a row without a numeric value is an error naming the file
    and line."""
    if not path.is_file():
        raise LowlabelError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as err:
        raise LowlabelError(f"{path}: cannot read the file ({err.strerror or err})") from None
    if text.startswith("path,"):
        reader = csv.reader(io.StringIO(text, newline=""))  # quoted fields may hold newlines
        header = next(reader)
        column = next((c for c in columns if c in header), None)
        if column is None:
            raise LowlabelError(f"{path}: the header {header} has no {' or '.join(columns)} column")
        rows = [(reader.line_num, dict(zip(header, r, strict=False))) for r in reader if r]
        items = [(n, r.get("path") or "", r.get(column)) for n, r in rows]
    else:
        column = columns[0]
        items = [(n, " ".join(parts[:-1]), parts[-1] if len(parts) > 1 else None)
                 for n, parts in enumerate((ln.split() for ln in text.splitlines()), start=1) if parts]
    out = []
    for n, name, value in items:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise LowlabelError(f"{path}: line {n} has no numeric {column} ({value!r}); the file may be truncated "
                                "or corrupt") from None
        if not name:
            raise LowlabelError(f"{path}: line {n} has no image path")
        out.append((n, name, number))
    if not out:
        raise LowlabelError(f"{path}: no rows in the file")
    return out


def read_labels(path: str | Path) -> tuple[list[Path], np.ndarray]:
    """Read a label file: our CSV (`path,identity,quality`) or the official `<path>\t<Q>` / `<path> <Q>` lines.

    Rows with a NaN quality (skipped singletons) are dropped; an infinite quality is an error naming the line.
    Returns paths and qualities (N,) float32.
    """
    path = Path(path)
    rows = _read_rows(path, ("quality",))
    bad = next((n for n, _, q in rows if np.isinf(q)), None)
    if bad is not None:
        raise LowlabelError(f"{path}: line {bad} has an infinite quality")
    kept = [(Path(name), q) for _, name, q in rows if np.isfinite(q)]
    if not kept:
        raise LowlabelError(f"{path}: no labelled image in the file (every quality is NaN)")
    return [p for p, _ in kept], np.asarray([q for _, q in kept], np.float32)


def read_scores(path: str | Path, root: Path | None = None) -> dict[Path, float]:
    """Image quality per resolved image path from `fiqa score` output (`path,score`) or a label file
    (`path,...,quality`); a relative path is taken under `root` when the file is there, else under the current
    folder."""
    out = {}
    for _, name, value in _read_rows(Path(path), ("score", "quality")):
        p = Path(name)
        if not p.is_absolute() and root is not None and (root / p).exists():
            p = root / p
        out[p.resolve()] = value
    return out


def image_qualities(folder: IdentityFolder, scores: dict[Path, float], source: Path) -> np.ndarray:
    """The quality (N,) of each image of `folder` from `read_scores` output; an image without one, or a non-finite
    quality, is an error naming `source` and the image."""
    missing = [p for p in folder.paths if p.resolve() not in scores]
    if missing:
        raise LowlabelError(f"{source}: no quality for {len(missing)} image(s), e.g. {missing[0]}; score the whole "
                            "folder (`lowlabel fiqa score DATA_DIR --model ... --out scores.csv`)")
    q = np.asarray([scores[p.resolve()] for p in folder.paths], np.float64)
    if not np.isfinite(q).all():
        raise LowlabelError(f"{source}: the quality of {folder.paths[int(np.argmin(np.isfinite(q)))]} is not finite")
    return q


def read_pairs(path: str | Path) -> dict[str, np.ndarray]:
    """A user's verification pairs: CSV with columns score,genuine (1/0),quality_a,quality_b -> score, genuine
    (bool) and pair quality (the lower of the two), as `evaluation.folder_pairs` gives them."""
    path = Path(path)
    try:
        table = np.genfromtxt(path, delimiter=",", names=True, dtype=np.float64, encoding="utf-8")
        columns = [table[c] for c in ("score", "genuine", "quality_a", "quality_b")]
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise LowlabelError(f"{path}: expected a CSV with columns score,genuine,quality_a,quality_b ({err})") from None
    score, genuine, qa, qb = (np.atleast_1d(c) for c in columns)
    if not all(np.isfinite(c).all() for c in (score, genuine, qa, qb)) or not np.isin(genuine, (0, 1)).all():
        raise LowlabelError(f"{path}: every row needs finite numbers and genuine 0 or 1")
    return {"score": score, "genuine": genuine.astype(bool), "quality": np.minimum(qa, qb)}


def read_embeddings(path: str | Path, folder: IdentityFolder, root: Path) -> np.ndarray:
    """Precomputed embeddings of the images of `folder`, (N, D) float32 in `folder.paths` order.

    `.npy`: an (N, D) array whose row i belongs to image i in the order `read_identity_folders` lists them (identity
    folders sorted by name, then image paths sorted inside each). `.npz`: arrays `embeddings` (N, D) and `paths` (N,)
    (relative to the data folder, or absolute), in any order. Wrong shapes, unknown or missing paths, and NaN/Inf
    rows are errors naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: embeddings file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            emb, names = loaded, None
        else:
            with loaded:
                if "embeddings" not in loaded.files:
                    raise LowlabelError(f"{path}: no 'embeddings' array (arrays: {loaded.files})")
                emb = loaded["embeddings"]
                names = loaded["paths"] if "paths" in loaded.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise LowlabelError(f"{path}: not a readable .npy/.npz file ({err})") from None
    n = len(folder.paths)
    if emb.ndim != 2 or emb.shape[0] != n or emb.shape[1] < 1 or not np.issubdtype(emb.dtype, np.number):
        raise LowlabelError(f"{path}: embeddings must be a numeric (N, D) array with N = {n} images of {root}; "
                            f"got shape {emb.shape}, dtype {emb.dtype}")
    if names is not None:
        index = {p.resolve(): i for i, p in enumerate(folder.paths)}
        given = [Path(str(x)) for x in names.tolist()]
        rows = [index.get((p if p.is_absolute() else root / p).resolve()) for p in given]
        missing = [str(p) for p, r in zip(given, rows, strict=True) if r is None]
        if missing or len(set(rows)) != n:
            raise LowlabelError(f"{path}: 'paths' must name each image of {root} once; unknown or repeated: "
                                f"{missing[:3] or 'duplicates'}")
        emb = emb[np.argsort(np.asarray(rows))]
    check_embeddings(emb.astype(np.float32), folder.paths, str(path))
    return emb.astype(np.float32)


def check_embeddings(emb: np.ndarray, paths: list[Path], source: str) -> None:
    """Every row of `emb` (N, D) finite and non-zero; otherwise an error naming the first bad image and `source`."""
    bad = ~np.isfinite(emb).all(axis=1) | ~(np.abs(emb).sum(axis=1) > 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise LowlabelError(f"{source}: the embedding of {paths[i]} (row {i}) is NaN, infinite or zero "
                            f"({int(bad.sum())} such rows); drop those images or fix the recogniser")


def folder_embeddings(folder: IdentityFolder, root: Path, *, recognizer: str, embeddings: Path | None, size: int,
                      cache_dir: Path | None) -> np.ndarray:
    """Embeddings (N, D) of the images of `folder`: read from `embeddings` (`read_embeddings`) when given, else
    computed by `recognizer` ('dlib' or a TorchScript file, inputs `size`) with the cache in `cache_dir`."""
    if embeddings is not None:
        return read_embeddings(embeddings, folder, root)
    emb = embed_files(make_extractor(recognizer, size=size), folder.paths, cache_dir=cache_dir)
    check_embeddings(emb, folder.paths, f"recogniser {recognizer}")
    return emb


def check_identities(folder: IdentityFolder, root: Path, *, skip_singletons: bool) -> None:
    """Identities with one image cannot have positives: an error naming their folders unless `skip_singletons`."""
    counts = np.bincount(folder.labels, minlength=len(folder.names))
    single = [folder.names[k] for k in np.flatnonzero(counts == 1)]
    if single and not skip_singletons:
        raise LowlabelError(f"{root}: {len(single)} identity folder(s) hold a single image ({', '.join(single[:3])}"
                            f"{', ...' if len(single) > 3 else ''}); add images, remove them, or pass "
                            "--skip-singletons")


def faces_world(n_identities: int, per_identity: int, *, seed: int, size: int) -> dict[str, torch.Tensor]:
    """The faces world as tensors: images (N, 3, size, size) in [-1, 1], identity (N,), true quality (N,) in [0, 1],
    and uint8 images (N, size, size, 3) for image-space baselines."""
    from lowlabel.data.synth.faces import FacesConfig, FacesDataset

    ds = FacesDataset(n_identities, per_identity, seed=seed, cfg=FacesConfig(size=size))
    samples = [ds.sample(i) for i in range(len(ds))]
    u8 = np.stack([s.image for s in samples])
    images = torch.from_numpy(u8).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return {"images": images, "uint8": torch.from_numpy(u8),
            "identity": torch.tensor([s.identity for s in samples], dtype=torch.long),
            "quality": torch.tensor([s.quality for s in samples], dtype=torch.float32)}
