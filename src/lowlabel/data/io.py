"""Reading and writing images and volumes, with errors that name the file and the problem.

Every error a user can cause (a missing, empty, corrupt or truncated file, a missing HDF5 key, a wrong shape,
non-finite values) is a `LowlabelError` whose message starts with the file's path. h5py and nibabel (the
`[medical]` extra) are imported only by the functions that need them. Writers are atomic: the data goes to a
temporary file beside the target, which is renamed over it only once complete, so an interrupted write never
leaves a half-written file behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.files import atomic_path

IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")


def _existing_file(path: str | Path, what: str) -> Path:
    """`path` as a Path, or a LowlabelError if it is missing, a folder, or empty."""
    path = Path(path)
    if not path.exists():
        raise LowlabelError(f"{path}: {what} file not found; check the path")
    if not path.is_file():
        raise LowlabelError(f"{path}: is not a file (a folder?); give the path of a {what} file")
    if path.stat().st_size == 0:
        raise LowlabelError(f"{path}: {what} file is empty (0 bytes); re-export or re-download it")
    return path


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file (jpg/png/webp/bmp, any format Pillow reads) into uint8 RGB, shape (H, W, 3).

    Grayscale, palette and CMYK images are converted to RGB; an alpha channel is dropped (not composited).
    16-bit grayscale is scaled to 8 bits (value / 257, rounded). EXIF orientation is not applied: pixels come
    in stored order. The whole file is decoded (`Image.load`), so a truncated file fails here, not later.
    """
    from PIL import Image, UnidentifiedImageError

    path = _existing_file(path, "image")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                gray = np.asarray(img, dtype=np.float64)
                arr = np.clip(np.rint(gray / 257.0), 0, 255).astype(np.uint8)
                return np.repeat(arr[:, :, None], 3, axis=2)
            rgb = img.convert("RGB")
    except UnidentifiedImageError:
        raise LowlabelError(
            f"{path}: not an image Pillow can read (unknown or corrupt header); supported: {', '.join(IMAGE_EXTS)}"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise LowlabelError(f"{path}: image is corrupt or truncated ({err}); re-export or re-download it") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


def list_images(root: str | Path, recursive: bool = True, exts: Iterable[str] = IMAGE_EXTS) -> list[Path]:
    """Image files under `root` whose suffix (case-insensitive) is in `exts`, sorted by path (deterministic).

    Hidden files and anything inside hidden folders (name starting with '.') are skipped. `root` must be an
    existing folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise LowlabelError(f"{root}: image folder not found (or not a folder); check the path")
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts}
    pattern = "**/*" if recursive else "*"
    found = (p for p in root.glob(pattern) if p.suffix.lower() in wanted and p.is_file())
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(root).parts))


def read_h5_volume(
    path: str | Path, keys: Sequence[str] = ("image", "label"), ndim: int | None = 3
) -> dict[str, np.ndarray]:
    """Read datasets `keys` of an HDF5 file (e.g. the LA `mri_norm2.h5`: `image` float32 (H, W, D), `label` uint8).

    Checks: the file exists, is HDF5, has every key (the message lists the keys present), each array has `ndim`
    dimensions (None: any), and floating-point arrays hold no NaN or inf. Arrays keep their stored dtype.
    """
    h5py = require("h5py", "medical", "reading HDF5 volumes")

    path = _existing_file(path, "HDF5")
    if not h5py.is_hdf5(path):
        raise LowlabelError(f"{path}: not an HDF5 file; expected an .h5 volume such as mri_norm2.h5")
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as fh:
            present = sorted(fh.keys())
            for key in keys:
                if key not in fh or not isinstance(fh[key], h5py.Dataset):
                    raise LowlabelError(
                        f"{path}: has no dataset '{key}'; keys present: {', '.join(present) or '(none)'}"
                    )
                out[key] = fh[key][()]
    except OSError as err:
        raise LowlabelError(f"{path}: HDF5 file is corrupt or truncated ({err}); re-download it") from None
    for key, arr in out.items():
        if ndim is not None and arr.ndim != ndim:
            raise LowlabelError(f"{path}: dataset '{key}' has {arr.ndim} dimensions {arr.shape}, expected {ndim}")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            bad = int(arr.size - np.isfinite(arr).sum())
            raise LowlabelError(f"{path}: dataset '{key}' holds {bad} NaN/inf values; fix or re-create the file")
    return out


def write_h5(path: str | Path, *, compression: str | None = "gzip", **arrays: Any) -> Path:
    """Write each keyword array as an HDF5 dataset of `path` (gzip-compressed like the LA files), atomically.

    `compression` is a keyword of this function, so it cannot be used as a dataset name.
    """
    h5py = require("h5py", "medical", "writing HDF5 volumes")

    if not arrays:
        raise LowlabelError(f"{path}: write_h5 needs at least one array, e.g. write_h5(path, image=..., label=...)")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        for key, value in arrays.items():
            arr = np.asarray(value)
            fh.create_dataset(key, data=arr, compression=compression if arr.ndim else None)
    return Path(path)


def _nifti_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise LowlabelError(f"{path}: a NIfTI file name must end in .nii or .nii.gz")
    return path


def read_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a NIfTI volume: (array in stored axis order and dtype, scaled if the header sets a slope; spacing).

    `spacing` is the voxel size per array axis from the header (`get_zooms`), e.g. millimetres.
    """
    nib = require("nibabel", "medical", "reading NIfTI volumes")
    from nibabel.filebasedimages import ImageFileError

    path = _existing_file(_nifti_path(path), "NIfTI")
    try:
        img = nib.load(path)
        arr = np.asarray(img.dataobj)
    except ImageFileError as err:
        raise LowlabelError(f"{path}: not a NIfTI file nibabel can read ({err})") from None
    except (OSError, EOFError, ValueError) as err:
        raise LowlabelError(f"{path}: NIfTI file is corrupt or truncated ({err}); re-export it") from None
    spacing = tuple(float(z) for z in img.header.get_zooms()[: arr.ndim])
    return arr, spacing


def write_nifti(path: str | Path, array: np.ndarray, spacing: Sequence[float]) -> Path:
    """Write `array` (any dtype NIfTI supports) as .nii/.nii.gz with voxel size `spacing` (one per axis), atomically.

    The affine is diag(spacing, 1): no rotation, origin at voxel (0, 0, 0).
    """
    nib = require("nibabel", "medical", "writing NIfTI volumes")

    path = _nifti_path(path)
    arr = np.asarray(array)
    if len(spacing) != arr.ndim or not all(float(s) > 0 for s in spacing):
        raise LowlabelError(f"{path}: spacing {tuple(spacing)} must give one positive size per axis of {arr.shape}")
    affine = np.eye(4)
    affine[: min(3, arr.ndim), : min(3, arr.ndim)] = np.diag([float(s) for s in spacing[:3]])
    img = nib.Nifti1Image(arr, affine)
    img.header.set_zooms(tuple(float(s) for s in spacing))
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path
