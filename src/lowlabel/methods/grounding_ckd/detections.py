"""Detections as data, so that any detector can be the teacher: per image its boxes and class probabilities (a
JSON or NPZ file per dataset, or the official region HDF5), phrase -> class matching (the official lookup table or
text-embedding similarity), and the teacher tensor the distillation loss reads.

JSON: {"class_names": [C names], "images": {image: record}} (or "images": [{"image": name, ...record}]), where a
record is {"boxes": [[x1, y1, x2, y2], ...]} plus one of
  "scores": [[C probabilities], ...]   one row per box (e.g. Yolo's sigmoid class scores),
  "logits": [[C logits], ...]          turned into probabilities by a softmax over the C classes (the official
                                       teacher: softmax over background + classes; name the background column
                                       "__background__" so that no phrase is matched to it),
  "labels": [name or index, ...] with "scores": [p, ...]   one class per box (the other classes get 0).
NPZ: `class_names` (C,), `image_names` (M,), `counts` (M,) boxes per image, `boxes` (sum, 4), `scores` (sum, C).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.files import atomic_path, read_text, write_text
from lowlabel.methods.grounding_ckd.data import read_npz

BACKGROUND = "__background__"
MATCH_THRESHOLD = 0.5  # cosine of MiniLM sentence embeddings; chosen here (the paper used WordNet head nouns)


@dataclass
class Detections:
    """class_names (C,); per image boxes (n, 4) float32 x1y1x2y2 and scores (n, C) float32 class probabilities."""

    class_names: list[str]
    boxes: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]

    def padded(self, images: Sequence[str], num_regions: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first `num_regions` detections of each image as (boxes (B, R, 4), scores (B, R, C), region_mask (B, R));
        padding rows are zero (the official zero-padding) and False in the mask."""
        out_boxes = torch.zeros(len(images), num_regions, 4)
        out_scores = torch.zeros(len(images), num_regions, len(self.class_names))
        mask = torch.zeros(len(images), num_regions, dtype=torch.bool)
        for i, name in enumerate(images):
            if name not in self.boxes:
                raise LowlabelError(f"no detections for image '{name}'; run the detector on it or drop the image")
            n = min(num_regions, len(self.boxes[name]))
            out_boxes[i, :n] = torch.from_numpy(self.boxes[name][:n])
            out_scores[i, :n] = torch.from_numpy(self.scores[name][:n])
            mask[i, :n] = True
        return out_boxes, out_scores, mask


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _record(rec: dict, classes: list[str], where: str) -> tuple[np.ndarray, np.ndarray]:
    """One image's JSON record -> (boxes (n, 4), scores (n, C)), checked."""
    try:
        boxes = np.asarray(rec.get("boxes", []), dtype=np.float32).reshape(-1, 4)
        if "logits" in rec:
            scores = _softmax(np.asarray(rec["logits"], dtype=np.float64).reshape(len(boxes), len(classes)))
        elif "labels" in rec:
            names = {c: i for i, c in enumerate(classes)}
            labels = [names[v] if isinstance(v, str) else int(v) for v in rec["labels"]]
            conf = np.asarray(rec.get("scores", [1.0] * len(labels)), dtype=np.float32).reshape(len(boxes))
            scores = np.zeros((len(boxes), len(classes)), dtype=np.float32)
            scores[np.arange(len(boxes)), labels] = conf
        else:
            scores = np.asarray(rec.get("scores", []), dtype=np.float32).reshape(len(boxes), len(classes))
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise LowlabelError(f"{where}: boxes (n, 4) and scores (n, {len(classes)}) / logits / labels do not fit "
                            f"({type(err).__name__}: {err}); see the format in grounding_ckd/detections.py") from None
    return boxes, scores.astype(np.float32)


def _check(boxes: np.ndarray, scores: np.ndarray, where: str) -> None:
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise LowlabelError(f"{where}: NaN or inf in boxes or scores")
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        raise LowlabelError(f"{where}: a box has x2 < x1 or y2 < y1; boxes are x1, y1, x2, y2 in pixels")
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        raise LowlabelError(f"{where}: scores outside [0, 1]; give raw detector outputs as 'logits' instead")


def read_detections(path: str | Path) -> Detections:
    """A JSON or NPZ detections file (format in the module docstring), checked."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: detections file not found")
    if path.suffix.lower() == ".npz":
        z = read_npz(path, {"class_names": str, "image_names": str, "counts": np.int64, "boxes": np.float32,
                            "scores": np.float32}, "the detections docstring (grounding_ckd/detections.py)")
        classes, names = z["class_names"], z["image_names"]
        counts, boxes, scores = z["counts"], z["boxes"], z["scores"]
        if counts.ndim != 1 or boxes.ndim != 2 or counts.sum() != len(boxes) or boxes.shape[1:] != (4,) \
                or scores.shape != (len(boxes), len(classes)) or len(counts) != len(names) or (counts < 0).any():
            raise LowlabelError(f"{path}: counts (M,) must sum to the rows of boxes (n, 4) and scores "
                                f"(n, {len(classes)}); got {counts.shape}, {boxes.shape}, {scores.shape}")
        splits = np.cumsum(counts)[:-1]
        box_of = dict(zip(names, np.split(boxes, splits), strict=True))
        score_of = dict(zip(names, np.split(scores, splits), strict=True))
    else:
        try:
            data = json.loads(read_text(path, "detections file"))
        except json.JSONDecodeError as err:
            raise LowlabelError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(data, dict) or not isinstance(data.get("class_names"), list) or \
                not isinstance(data.get("images"), (dict, list)):
            raise LowlabelError(f"{path}: expected {{'class_names': [...], 'images': {{...}} or [...]}}")
        classes = [str(c) for c in data["class_names"]]
        images = data["images"]
        items = images.items() if isinstance(images, dict) else (
            (r.get("image") if isinstance(r, dict) else None, r) for r in images)
        box_of, score_of = {}, {}
        for name, rec in items:
            if not name or not isinstance(rec, dict):
                raise LowlabelError(f"{path}: every image needs a name and a record with 'boxes'")
            box_of[name], score_of[name] = _record(rec, classes, f"{path}, image '{name}'")
    for name in box_of:
        _check(box_of[name], score_of[name], f"{path}, image '{name}'")
    return Detections(classes, box_of, score_of)


def write_detections(path: str | Path, dets: Detections) -> Path:
    """Write `dets` as NPZ (suffix .npz) or JSON (any other suffix), atomically (`lowlabel.files`)."""
    path = Path(path)
    names = list(dets.boxes)
    if path.suffix.lower() != ".npz":
        images = {n: {"boxes": dets.boxes[n].tolist(), "scores": dets.scores[n].tolist()} for n in names}
        return write_text(path, json.dumps({"class_names": dets.class_names, "images": images}))
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(
            fh, class_names=np.asarray(dets.class_names), image_names=np.asarray(names),
            counts=np.asarray([len(dets.boxes[n]) for n in names], dtype=np.int64),
            boxes=np.concatenate([dets.boxes[n] for n in names]).reshape(-1, 4),
            scores=np.concatenate([dets.scores[n] for n in names]).reshape(-1, len(dets.class_names)))
    return path


def phrase_key(text: str) -> str:
    """The official lookup key: lower-cased tokens joined by single spaces."""
    return " ".join(re.findall(r"\w+", text.lower()))


def read_phrase_class_table(path: str | Path, class_names: Sequence[str]) -> dict[str, int]:
    """The official phrase -> label JSON {"phrase": "class name"} -> {phrase key: index into class_names}."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: phrase-to-class table not found")
    try:
        table = json.loads(read_text(path, "phrase-to-class table"))
    except json.JSONDecodeError as err:
        raise LowlabelError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(table, dict):
        raise LowlabelError(f"{path}: expected one JSON object {{\"phrase\": \"class name\", ...}}")
    index = {c.lower(): i for i, c in enumerate(class_names)}
    unknown = sorted({str(v) for v in table.values() if str(v).lower() not in index})
    if unknown:
        raise LowlabelError(f"{path}: class names {unknown[:5]} are not among the detector's {len(class_names)} "
                            "classes; fix the table or use the detector it was made for")
    return {phrase_key(p): index[str(c).lower()] for p, c in table.items()}


def classes_by_table(phrases: Sequence[str], table: dict[str, int]) -> torch.Tensor:
    """(N,) class index of each phrase by exact key lookup (official); -1 where the table has no entry."""
    return torch.tensor([table.get(phrase_key(p), -1) for p in phrases], dtype=torch.long)


def classes_by_similarity(phrases: Sequence[str], class_names: Sequence[str], encoder: object | None = None, *,
                          threshold: float = MATCH_THRESHOLD) -> torch.Tensor:
    """(N,) the class whose name is most similar to each phrase (cosine of sentence embeddings, first on ties), or -1
    when the best cosine is below `threshold`. `encoder` has `encode(texts) -> (n, D)` unit rows (default: offline
    all-MiniLM-L6-v2, `lowlabel.nn.text.sentence_encoder("minilm")`). The background class is never chosen."""
    candidates = [i for i, c in enumerate(class_names) if c != BACKGROUND]
    if not phrases or not candidates:
        return torch.full((len(phrases),), -1, dtype=torch.long)
    if encoder is None:
        from lowlabel.nn.text import sentence_encoder

        encoder = sentence_encoder("minilm")
    texts = [class_names[i].replace("_", " ") for i in candidates]
    a = torch.nn.functional.normalize(encoder.encode(list(phrases)).float(), dim=1)  # type: ignore[attr-defined]
    b = torch.nn.functional.normalize(encoder.encode(texts).float(), dim=1)  # type: ignore[attr-defined]
    best, arg = (a @ b.T).max(dim=1)
    return torch.where(best >= threshold, torch.tensor(candidates)[arg], torch.full_like(arg, -1))


def teacher_scores(class_scores: torch.Tensor, phrase_class: torch.Tensor) -> torch.Tensor:
    """Teacher t(r, p) = probability of the phrase's class on each region: class_scores (B, R, C), phrase_class (B, P)
    (-1 = no class) -> (B, P, R), all-zero rows for phrases without a class (official `distill_labels`)."""
    if class_scores.dim() != 3 or phrase_class.dim() != 2 or phrase_class.shape[0] != class_scores.shape[0]:
        raise LowlabelError(f"class_scores {tuple(class_scores.shape)} and phrase_class {tuple(phrase_class.shape)} "
                            "must be (B, R, C) and (B, P)")
    picked = class_scores.gather(2, phrase_class.clamp_min(0)[:, None, :].expand(-1, class_scores.shape[1], -1))
    return torch.where(phrase_class[:, :, None] >= 0, picked.transpose(1, 2), picked.new_zeros(()))


@dataclass
class RegionRecord:
    """One image of the official region HDF5: features (R, dim_r), logits (R, 1 + C), boxes (R, 4)."""

    features: np.ndarray
    logits: np.ndarray
    boxes: np.ndarray


def official_feature_dim(path: str | Path) -> int:
    """dim_r from the file name, as the official loader: "vgg" -> 4096, "irv2" -> 1536, else 2048 (ResNet-101)."""
    name = Path(path).name
    return 4096 if "vgg" in name else 1536 if "irv2" in name else 2048


def read_region_hdf5(path: str | Path, images: Sequence[str], *, dim_r: int | None = None) -> dict[str, RegionRecord]:
    """The official region HDF5: per image a (R, dim_r + 1 + C + 4) array [feature | detector logits over background
    + C classes | x1, y1, x2, y2]. dim_r defaults to `official_feature_dim(path)`. The teacher is softmax(logits)."""
    h5py = require("h5py", "medical", "reading the official CKD region HDF5")
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: region feature HDF5 not found")
    dim_r = official_feature_dim(path) if dim_r is None else dim_r
    out = {}
    with h5py.File(path, "r") as fh:
        for name in images:
            if name not in fh:
                raise LowlabelError(f"{path}: no dataset for image '{name}'")
            rows = np.asarray(fh[name][()], dtype=np.float32)
            if rows.ndim != 2 or rows.shape[1] <= dim_r + 4:
                raise LowlabelError(f"{path}, image '{name}': shape {rows.shape} is not (R, {dim_r} + classes + 4); "
                                    "pass dim_r if the feature size is not the one the file name implies")
            out[name] = RegionRecord(rows[:, :dim_r], rows[:, dim_r:-4], rows[:, -4:])
    return out
