"""Detections as data: JSON/NPZ round trips and errors, the official region HDF5, phrase -> class matching, and the
teacher tensor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.grounding_ckd.detections import (
    Detections,
    classes_by_similarity,
    classes_by_table,
    read_detections,
    read_phrase_class_table,
    read_region_hdf5,
    teacher_scores,
    write_detections,
)

CLASSES = ["__background__", "person", "dog", "dining table"]


def sample() -> Detections:
    boxes = {"a.jpg": np.array([[0, 0, 10, 10], [5, 5, 20, 30]], np.float32), "b.jpg": np.zeros((0, 4), np.float32)}
    scores = {"a.jpg": np.array([[0.1, 0.7, 0.1, 0.1], [0.0, 0.2, 0.8, 0.0]], np.float32),
              "b.jpg": np.zeros((0, 4), np.float32)}
    return Detections(CLASSES, boxes, scores)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    path = write_detections(tmp_path / f"dets{suffix}", sample())
    back = read_detections(path)
    assert back.class_names == CLASSES and list(back.boxes) == ["a.jpg", "b.jpg"]
    for name in back.boxes:
        np.testing.assert_array_equal(back.boxes[name], sample().boxes[name])
        np.testing.assert_array_equal(back.scores[name], sample().scores[name])
    boxes, scores, mask = back.padded(["b.jpg", "a.jpg"], 3)
    assert mask.tolist() == [[False] * 3, [True, True, False]]
    assert boxes[1, 1].tolist() == [5, 5, 20, 30] and scores[0].abs().sum() == 0


def test_json_logits_and_labels_forms(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"class_names": CLASSES, "images": [
        {"image": "a.jpg", "boxes": [[0, 0, 1, 1]], "logits": [[0.0, math.log(3), 0.0, 0.0]]},
        {"image": "b.jpg", "boxes": [[0, 0, 1, 1], [1, 1, 2, 2]], "labels": ["dog", 1], "scores": [0.9, 0.4]},
    ]}))
    dets = read_detections(path)
    np.testing.assert_allclose(dets.scores["a.jpg"], [[1 / 6, 3 / 6, 1 / 6, 1 / 6]], rtol=1e-6)
    np.testing.assert_allclose(dets.scores["b.jpg"], [[0, 0, 0.9, 0], [0, 0.4, 0, 0]])


@pytest.mark.parametrize(("record", "problem"), [
    ({"boxes": [[0, 0, 1, 1]], "scores": [[0.5, 0.5]]}, "do not fit"),
    ({"boxes": [[0, 0, 1, 1]], "scores": [[0.5, 1.5, 0, 0]]}, "outside \\[0, 1\\].*logits"),
    ({"boxes": [[5, 0, 1, 1]], "scores": [[0, 1, 0, 0]]}, "x2 < x1"),
    ({"boxes": [[0, 0, 1, 1]], "labels": ["cat"]}, "do not fit"),
])
def test_bad_detections_name_file_and_image(tmp_path: Path, record: dict, problem: str) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"class_names": CLASSES, "images": {"x.jpg": record}}))
    with pytest.raises(LowlabelError, match=rf"d\.json, image 'x\.jpg'.*{problem}"):
        read_detections(path)
    path.write_text('{"class_names": [],\n "images": {,}}')
    with pytest.raises(LowlabelError, match=r"d\.json line 2: not valid JSON"):
        read_detections(path)


def test_lookup_table_matches_official_keys(tmp_path: Path) -> None:
    path = tmp_path / "phrase_to_label.json"
    path.write_text(json.dumps({"a man": "Person", "the dog": "dog"}))
    table = read_phrase_class_table(path, CLASSES)
    assert classes_by_table(["A  man", "the dog", "a cat"], table).tolist() == [1, 2, -1]
    path.write_text(json.dumps({"a cat": "cat"}))
    with pytest.raises(LowlabelError, match=r"\['cat'\] are not among"):
        read_phrase_class_table(path, CLASSES)


def test_similarity_matching_with_a_given_encoder() -> None:
    class Bag:
        """Texts -> counts of three marker words (a stand-in for a sentence encoder)."""

        def encode(self, texts: list[str]) -> torch.Tensor:
            words = ("man", "dog", "table")
            rows = [[float(w in t or (w == "man" and "person" in t)) for w in words] for t in texts]
            rows = [[*r, float(not any(r))] for r in rows]
            return torch.nn.functional.normalize(torch.tensor(rows), dim=1)

    got = classes_by_similarity(["a man", "two dogs", "a wooden table", "the sky", "__background__"], CLASSES,
                                Bag(), threshold=0.5)
    assert got.tolist() == [1, 2, 3, -1, -1]


def test_teacher_scores_pick_the_phrase_class() -> None:
    scores = torch.rand(2, 5, 4, generator=torch.Generator().manual_seed(0))
    phrase_class = torch.tensor([[1, -1, 3], [0, 2, -1]])
    teacher = teacher_scores(scores, phrase_class)
    assert teacher.shape == (2, 3, 5)
    for b in range(2):
        for p in range(3):
            c = phrase_class[b, p].item()
            expected = torch.zeros(5) if c < 0 else scores[b, :, c]
            torch.testing.assert_close(teacher[b, p], expected)


def test_official_region_hdf5(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "region_features_vgg_test.hdf5"
    rows = np.arange(3 * (4096 + 3 + 4), dtype=np.float32).reshape(3, -1)
    with h5py.File(path, "w") as fh:
        fh["42"] = rows
    rec = read_region_hdf5(path, ["42"])["42"]
    assert rec.features.shape == (3, 4096) and rec.logits.shape == (3, 3) and rec.boxes.shape == (3, 4)
    np.testing.assert_array_equal(rec.boxes, rows[:, -4:])
    with pytest.raises(LowlabelError, match="pass dim_r"):
        read_region_hdf5(path, ["42"], dim_r=5000)
