"""The features file that training and evaluation read: per image R proposals with region features, boxes and the
detector's class probabilities (the teacher), per sentence its phrases with the phrase's class and, for evaluation,
its ground-truth boxes. Any detector and any backbone can produce it (`lowlabel grounding prepare` does for
Flickr30K Entities / ReferItGame annotations, `prepare-coco` for the COCO layout; the built-in world in
`shapes_world.py`); it plays the part of the official region and phrase HDF5.

NPZ arrays (N images, R proposal slots, D feature width, C detector classes, S sentences, Q phrases, G boxes):
  image_names (N,) str; features (N, R, D) float32; boxes (N, R, 4) float32 x1y1x2y2 pixels; region_mask (N, R) bool
  (False = padding slot); scores (N, R, C) float32 in [0, 1] (C may be 0: no teacher); class_names (C,) str;
  sentence_image (S,) int64 index into image_names; sentences (S,) str; phrase_sentence (Q,) int64 (non-decreasing);
  phrase_text (Q,) str; phrase_class (Q,) int64 (-1 = no class: no distillation, no detector-alone answer);
  gt_boxes (Q, G, 4) float32 with gt_mask (Q, G) bool (a phrase is evaluated when any gt_mask is True, and a
  proposal is correct when its IoU with at least one of the phrase's boxes is > 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lowlabel.errors import LowlabelError
from lowlabel.files import atomic_path
from lowlabel.methods.grounding_ckd.data import read_npz

ARRAYS: dict[str, type] = {
    "image_names": str, "features": np.float32, "boxes": np.float32, "region_mask": bool, "scores": np.float32,
    "class_names": str, "sentence_image": np.int64, "sentences": str, "phrase_sentence": np.int64,
    "phrase_text": str, "phrase_class": np.int64, "gt_boxes": np.float32, "gt_mask": bool}


@dataclass
class GroundingSet:
    """The arrays of the module docstring, as numpy arrays (strings as Python lists)."""

    image_names: list[str]
    features: np.ndarray
    boxes: np.ndarray
    region_mask: np.ndarray
    scores: np.ndarray
    class_names: list[str]
    sentence_image: np.ndarray
    sentences: list[str]
    phrase_sentence: np.ndarray
    phrase_text: list[str]
    phrase_class: np.ndarray
    gt_boxes: np.ndarray
    gt_mask: np.ndarray

    def __post_init__(self) -> None:
        self.check("grounding set")

    @property
    def num_regions(self) -> int:
        return int(self.features.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[2])

    def check(self, where: str) -> None:
        """Raise a LowlabelError naming `where` and the first array that does not fit the others."""
        n, s, q = len(self.image_names), len(self.sentences), len(self.phrase_text)
        expect = {"features": (n, None, None), "boxes": (n, None, 4), "region_mask": (n, None),
                  "scores": (n, None, len(self.class_names)), "sentence_image": (s,), "phrase_sentence": (q,),
                  "phrase_class": (q,), "gt_boxes": (q, None, 4), "gt_mask": (q, None)}
        r = self.features.shape[1] if self.features.ndim == 3 else None
        for name, shape in expect.items():
            arr = getattr(self, name)
            want = tuple(r if (d is None and i == 1 and name in ("boxes", "region_mask", "scores")) else d
                         for i, d in enumerate(shape))
            if arr.ndim != len(want) or any(w is not None and a != w for a, w in zip(arr.shape, want, strict=True)):
                raise LowlabelError(f"{where}: '{name}' has shape {arr.shape}, expected {want} (None = any) for "
                                    f"{n} images, {s} sentences, {q} phrases")
        if self.gt_boxes.shape[1] != self.gt_mask.shape[1]:
            raise LowlabelError(f"{where}: gt_boxes {self.gt_boxes.shape} and gt_mask {self.gt_mask.shape} disagree")
        if s and (self.sentence_image.min() < 0 or self.sentence_image.max() >= n):
            raise LowlabelError(f"{where}: sentence_image holds indices outside 0..{n - 1}")
        if q and (np.any(np.diff(self.phrase_sentence) < 0) or self.phrase_sentence.min() < 0
                  or self.phrase_sentence.max() >= s):
            raise LowlabelError(f"{where}: phrase_sentence must be non-decreasing indices into the {s} sentences")
        if q and (self.phrase_class.min() < -1 or self.phrase_class.max() >= len(self.class_names)):
            raise LowlabelError(f"{where}: phrase_class must be -1 or an index into the {len(self.class_names)} "
                                "class_names")
        for name in ("features", "boxes", "gt_boxes"):
            if not np.isfinite(getattr(self, name)).all():
                raise LowlabelError(f"{where}: '{name}' holds NaN or infinite values")
        if not self.region_mask.any(axis=1).all():
            raise LowlabelError(f"{where}: an image has no proposal (region_mask all False); drop it or detect again")
        if self.scores.size and (self.scores.min() < 0 or self.scores.max() > 1):
            raise LowlabelError(f"{where}: scores must be class probabilities in [0, 1]")

    def phrases_of(self) -> list[list[int]]:
        """Per sentence, the indices of its phrases (into the Q phrase arrays), in order."""
        out: list[list[int]] = [[] for _ in self.sentences]
        for i, s in enumerate(self.phrase_sentence.tolist()):
            out[s].append(i)
        return out

    def subset(self, images: list[int]) -> GroundingSet:
        """The images `images` (indices) with their sentences and phrases."""
        keep_img = np.zeros(len(self.image_names), bool)
        keep_img[images] = True
        new_index = np.cumsum(keep_img) - 1
        keep_s = keep_img[self.sentence_image]
        s_index = np.cumsum(keep_s) - 1
        keep_q = keep_s[self.phrase_sentence]
        return GroundingSet(
            [self.image_names[i] for i in np.flatnonzero(keep_img)], self.features[keep_img], self.boxes[keep_img],
            self.region_mask[keep_img], self.scores[keep_img], list(self.class_names),
            new_index[self.sentence_image[keep_s]], [t for t, k in zip(self.sentences, keep_s, strict=True) if k],
            s_index[self.phrase_sentence[keep_q]], [t for t, k in zip(self.phrase_text, keep_q, strict=True) if k],
            self.phrase_class[keep_q], self.gt_boxes[keep_q], self.gt_mask[keep_q])

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """(features, boxes, region_mask, scores) as torch tensors."""
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in
                     (self.features, self.boxes, self.region_mask, self.scores))


def padded_boxes(boxes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each phrase's ground-truth boxes (M_q, 4) -> gt_boxes (Q, G, 4) and gt_mask (Q, G), G = max(max M_q, 1)."""
    g = max([len(b) for b in boxes] + [1])
    gt_boxes = np.zeros((len(boxes), g, 4), np.float32)
    gt_mask = np.zeros((len(boxes), g), bool)
    for q, b in enumerate(boxes):
        gt_boxes[q, : len(b)], gt_mask[q, : len(b)] = b, True
    return gt_boxes, gt_mask


def write_grounding_set(path: str | Path, data: GroundingSet) -> Path:
    """Write `data` as an NPZ file, atomically (`lowlabel.files.atomic_path`)."""
    arrays = {name: getattr(data, name) for name in ARRAYS}
    for name in ("image_names", "class_names", "sentences", "phrase_text"):
        arrays[name] = np.asarray(arrays[name], dtype=str)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    return Path(path)


def read_grounding_set(path: str | Path) -> GroundingSet:
    """Read and check a features NPZ (format in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: grounding features file not found (make one with `lowlabel grounding "
                            "prepare` or `prepare-coco`, or see the format in grounding_ckd/features.py)")
    arrays = read_npz(path, ARRAYS, "grounding_ckd/features.py")
    data = GroundingSet.__new__(GroundingSet)
    for name, value in arrays.items():
        setattr(data, name, value)
    data.check(str(path))
    return data


def read_split(root: str | Path, split: str) -> GroundingSet:
    """`<root>/<split>.npz` of a prepared folder (train.npz, val.npz or test.npz), or `root` itself if a file."""
    root = Path(root)
    if root.is_file():
        return read_grounding_set(root)
    path = root / f"{split}.npz"
    if not path.is_file():
        have = sorted(p.name for p in root.glob("*.npz")) if root.is_dir() else []
        raise LowlabelError(f"{path}: no {split} split; a prepared folder holds train.npz and val.npz (or test.npz), "
                            f"found {have or 'none'}")
    return read_grounding_set(path)
