"""Face detection and alignment of user photos with dlib (the `[face]` extra), cached as PNG crops.

FDRL expects aligned face crops (RAF-DB ships 100×100 aligned faces). For a folder of raw photos, `FaceAligner`
finds the largest face with dlib's offline HOG frontal-face detector, fits the 5-point landmark model that SDD-FIQA's
dlib recogniser uses (`face_recognition_models`), and cuts a rotation-normalised square chip with
`dlib.get_face_chip`. `align_files` does this once per file and caches the crops, so training reads the cache.
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
                with atomic_path(target) as tmp:
                    Image.fromarray(chip).save(tmp, format="PNG")
        out.append(target if target.is_file() else None)
    return out
