"""Face embeddings of image files: the `Extractor` interface, dlib's recogniser as one, and a cached `embed_files`.

An extractor maps a list of uint8 RGB images (H, W, 3) to an (N, D) float32 array and has a `name` that keys the
cache. SDD-FIQA labels with any extractor; FDRL's `dlib` backbone is `DlibEmbedder` frozen.
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from lowlabel.data.io import read_image
from lowlabel.extras import require
from lowlabel.files import atomic_path


class Extractor(Protocol):
    """What the labelling pipeline needs from a face recogniser."""

    name: str

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 RGB images (H, W, 3) -> (N, D) float32 embeddings."""
        ...


class DlibEmbedder:
    """dlib's ResNet face descriptor (128-d, face-recognition pretrained) after its 5-point landmark alignment;
    needs `pip install "lowlabel[face]"` (`dlib-bin`, `face-recognition-models`), imported only when built.

    The images are taken to be face crops: the landmarks are searched in the whole image (no face detector), as for
    aligned datasets (CASIA / MS1M, RAF-DB, FER2013's 48x48 faces).
    """

    name = "dlib_resnet_v1"

    def __init__(self) -> None:
        dlib = require("dlib", "face", "the dlib face embedding")
        frm = require("face_recognition_models", "face", "the dlib face embedding")
        self._dlib = dlib
        self._landmarks = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(images), 128), np.float32)
        for i, img in enumerate(images):  # dlib's API is per image; this is not a torch hot path
            img = np.ascontiguousarray(img)
            box = self._dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
            shape = self._landmarks(img, box)
            out[i] = np.asarray(self._net.compute_face_descriptor(img, shape), np.float32)
        return out


def cache_key(extractor: Extractor, paths: Sequence[Path]) -> str:
    """sha1 of the extractor name and each file's path, size and modification time."""
    h = hashlib.sha1(extractor.name.encode())
    for p in paths:
        st = Path(p).stat()
        h.update(f"\n{Path(p).resolve()}\t{st.st_size}\t{st.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def embed_files(extractor: Extractor, paths: Sequence[Path], *, cache_dir: Path | None = None,
                batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, D) float32 of image files, read with `read_image` (errors name the file), cached as
    `cache_dir/embeddings-<key>.npz` keyed by the file list (see `cache_key`)."""
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"embeddings-{cache_key(extractor, paths)}.npz"
        if cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as stored:
                    return stored["embeddings"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # a damaged entry is recomputed
                pass
    parts = []
    progress = None
    if sys.stdout.isatty():
        from rich.progress import Progress

        progress = Progress()
        progress.start()
        task = progress.add_task("embedding", total=len(paths))
    try:
        for b in range(0, len(paths), batch_size):
            parts.append(extractor.embed([read_image(p) for p in paths[b : b + batch_size]]))
            if progress is not None:
                progress.update(task, advance=len(parts[-1]))
    finally:
        if progress is not None:
            progress.stop()
    emb = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)
    if cache is not None:
        with atomic_path(cache) as tmp:
            np.savez(tmp, embeddings=emb)
    return emb
