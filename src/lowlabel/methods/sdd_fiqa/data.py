"""SDD-FIQA data: a folder per identity (CASIA-WebFace / MS1M ImageFolder layout), label files, the faces world.

Official layout (spec "Datasets and on-disk formats"): `root/<identity>/<image>.jpg`, aligned face crops. Identity
labels are the folder names in sorted order (torchvision ImageFolder order). Pseudo-labels are written as a CSV
`path,identity,quality` (the official tab-separated `<path>\\t<Q>` file is also readable by `read_labels`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lowlabel.data.io import list_images, read_image
from lowlabel.errors import LowlabelError
from lowlabel.methods.sdd_fiqa.extractors import to_model_input


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
    """The images of a label file (`read_labels`), relative paths taken under `root`, with their pseudo-labels."""
    paths, quality = read_labels(labels_file)
    return LabelledImages([p if p.is_absolute() else Path(root) / p for p in paths], quality, size)


def write_labels(path: str | Path, paths: list[Path], labels: np.ndarray, quality: np.ndarray) -> Path:
    """Write `path,identity,quality` CSV rows (quality NaN for skipped singletons), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "identity", "quality"])
        for p, y, q in zip(paths, labels.tolist(), quality.tolist(), strict=True):
            writer.writerow([str(p), y, f"{q:.6f}"])
    tmp.replace(path)
    return path


def read_labels(path: str | Path) -> tuple[list[Path], np.ndarray]:
    """Read a label file: our CSV (`path,identity,quality`) or the official `<path>\\t<Q>` / `<path> <Q>` lines.

    Rows with a NaN quality (skipped singletons) are dropped. Returns paths and qualities (N,) float32.
    """
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: label file not found; create it with `lowlabel fiqa label`")
    paths, qs = [], []
    with open(path, newline="") as fh:
        first = fh.readline()
        fh.seek(0)
        rows = csv.DictReader(fh) if first.startswith("path,") else (
            {"path": " ".join(parts[:-1]), "quality": parts[-1]} for parts in (ln.split() for ln in fh) if parts)
        for n, row in enumerate(rows, start=1):
            try:
                q = float(row["quality"])
            except (KeyError, TypeError, ValueError):
                raise LowlabelError(f"{path}: line {n + 1} has no numeric quality: {row}") from None
            if np.isfinite(q):
                paths.append(Path(row["path"]))
                qs.append(q)
    if not paths:
        raise LowlabelError(f"{path}: no labelled image in the file")
    return paths, np.asarray(qs, np.float32)


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
