"""Face detection and alignment of user photos with dlib (the `[face]` extra), cached as PNG crops.

FDRL expects aligned face crops (RAF-DB ships 100×100 aligned faces). For a folder of raw photos, `FaceAligner`
finds the largest face with dlib's offline HOG frontal-face detector, fits the 5-point landmark model that SDD-FIQA's
dlib recogniser uses (`face_recognition_models`), and cuts a rotation-normalised square chip with
`dlib.get_face_chip`. `align_files` does this once per file and caches the crops, so training reads the cache.
`DlibEmbedder` / `embed_files`: the frozen dlib face-recognition embedding (128-d) of face crops, cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lowlabel.data.io import read_image
from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.files import atomic_path

ON_MISSING: tuple[str, ...] = ("error", "skip", "keep")


class FaceAligner:
    """uint8 RGB image (H, W, 3) -> aligned uint8 RGB face chip (size, size, 3), or None when no face is found.

    `upsample`: how many times dlib doubles the image before detecting (1 finds faces down to ~40 px, e.g. the
    48×48 FER2013 crops); `padding`: the margin around the landmarks, as a fraction of the face (dlib's default 0.25).
    """

    def __init__(self, *, size: int = 224, padding: float = 0.25, upsample: int = 1) -> None:
        if size < 1 or padding < 0 or upsample < 0:
            raise LowlabelError(f"FaceAligner: size={size} must be positive, padding={padding} and upsample="
                                f"{upsample} non-negative")
        dlib = require("dlib", "face", "face alignment")
        frm = require("face_recognition_models", "face", "face alignment")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.size, self.padding, self.upsample = size, padding, upsample

    @property
    def name(self) -> str:
        """Identifies the settings (part of the cache key)."""
        return f"dlib_hog_5pt-size{self.size}-pad{self.padding}-up{self.upsample}"

    def align(self, image: np.ndarray) -> np.ndarray | None:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        boxes = self._detector(image, self.upsample)
        if len(boxes) == 0:
            return None
        box = max(boxes, key=lambda b: b.width() * b.height())
        shape = self._landmarks(image, box)
        return np.asarray(self._dlib.get_face_chip(image, shape, size=self.size, padding=self.padding), np.uint8)


def _cache_name(aligner_name: str, path: Path) -> str:
    st = path.stat()
    key = f"{aligner_name}\n{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}"
    return hashlib.sha1(key.encode()).hexdigest() + ".png"


def align_files(paths: Sequence[Path], cache_dir: str | Path, *, aligner: FaceAligner | None = None,
                on_missing: str = "error") -> list[Path | None]:
    """Aligned crops of image files, one PNG per file in `cache_dir` (keyed by aligner settings and the file's
    path, size and modification time, so an edited photo is aligned again); returns their paths in input order.

    A photo with no detectable face: "error" (default) raises a LowlabelError naming it; "skip" gives None in its
    place (drop it and its label); "keep" caches the whole photo resized to a square, unaligned. A miss is
    remembered (`<key>.noface`), so "skip" does not run the detector on that photo again.
    """
    from PIL import Image

    if on_missing not in ON_MISSING:
        raise LowlabelError(f"on_missing='{on_missing}'; use one of {', '.join(ON_MISSING)}")
    aligner = aligner or FaceAligner()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out: list[Path | None] = []
    for p in paths:  # dlib works one image at a time; alignment runs once per file, then the cache answers
        p = Path(p)
        if not p.is_file():
            raise LowlabelError(f"{p}: image not found; check the path")
        target = cache_dir / _cache_name(aligner.name, p)
        no_face = target.with_suffix(".noface")
        if not target.is_file() and not (no_face.is_file() and on_missing == "skip"):
            image = read_image(p)
            chip = aligner.align(image)
            if chip is None:
                no_face.touch()
                if on_missing == "error":
                    raise LowlabelError(f"{p}: no face found by the dlib detector; crop the face by hand, remove "
                                        "the file, or pass on_missing='skip' or 'keep'")
                if on_missing == "keep":
                    chip = np.asarray(Image.fromarray(image).resize((aligner.size, aligner.size), Image.BILINEAR))
            if chip is not None:
                tmp = target.with_name(f".tmp-{target.name}")
                Image.fromarray(chip).save(tmp, format="PNG")
                tmp.replace(target)
        out.append(target if target.is_file() else None)
    return out


class DlibEmbedder:
    """dlib's ResNet face descriptor (128-d, face-recognition pretrained) of face crops, after its 5-point alignment.

    uint8 RGB crops (H, W, 3) -> (N, 128) float32. The landmarks are searched in the whole crop (no detector: the
    inputs are face crops, as FER2013's 48×48 faces or RAF-DB's aligned ones). The same recogniser as SDD-FIQA's
    `DlibExtractor`; a minimal copy here because a method does not import another (it belongs in a shared module).
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
        for i, img in enumerate(images):  # dlib's API is per image
            img = np.ascontiguousarray(img, dtype=np.uint8)
            box = self._dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
            out[i] = np.asarray(self._net.compute_face_descriptor(img, self._landmarks(img, box)), np.float32)
        return out


def embedding_cache(paths: Sequence[Path], cache_dir: str | Path, name: str = DlibEmbedder.name) -> Path:
    """The cache file of the embeddings of `paths`: keyed by the embedder's name and each file's path, size and
    modification time."""
    h = hashlib.sha1(name.encode())
    for p in paths:
        st = Path(p).stat()
        h.update(f"\n{Path(p).resolve()}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return Path(cache_dir) / f"dlib-embeddings-{h.hexdigest()}.npz"


def embed_files(paths: Sequence[Path], cache_dir: str | Path, *, embedder: DlibEmbedder | None = None) -> np.ndarray:
    """dlib embeddings (N, 128) float32 of image files, computed once and cached as one `.npz` in `cache_dir`, keyed
    by the embedder and each file's path, size and modification time (an edited file is embedded again)."""
    embedder = embedder or DlibEmbedder()
    cache = embedding_cache(paths, cache_dir, embedder.name)
    if cache.is_file():
        return np.load(cache)["embeddings"]
    out = np.concatenate([embedder.embed([read_image(p) for p in paths[b : b + 256]])
                          for b in range(0, len(paths), 256)]) if len(paths) else np.zeros((0, 128), np.float32)
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, embeddings=out)
    return out
