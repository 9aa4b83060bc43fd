"""COCO captions -> phrases -> ground truth (the real-data run's evaluation rule), the COCO annotation reader, the
proposals' NMS, and the assembly of a grounding set, on tiny files written here (the detector and the backbone are
replaced by fakes); the Darknet detector itself on one real val image when ../shared/data is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lowlabel.errors import LowlabelError
from lowlabel.methods.grounding_ckd import coco, regions

CATEGORIES = ["person", "dining table", "bus", "cell phone", "sports ball", "dog"]
PERSON, TABLE, BUS, PHONE, BALL, DOG = range(6)


@pytest.mark.parametrize(("caption", "expected"), [
    ("A man sitting at a dining table with his dog.", [("man", PERSON), ("dining table", TABLE), ("dog", DOG)]),
    ("Two big red buses and an old big red bus", [("big red buses", BUS), ("big red bus", BUS)]),  # +es plural
    ("A woman talks on her phone", [("woman", PERSON), ("phone", PHONE)]),  # synonyms
    ("A man dog sits", [("man", PERSON), ("dog", DOG)]),  # a category word ends the words taken before a phrase
    ("a wooden table near a tennis ball", [("wooden table", TABLE), ("tennis ball", BALL)]),  # two-word synonym
    ("A DOG, a Ball.", [("dog", DOG), ("ball", BALL)]),
    ("Nothing to see here", []),
])
def test_caption_phrases_by_the_documented_rule(caption: str, expected: list[tuple[str, int]]) -> None:
    assert coco.caption_phrases(caption, coco.word_table(CATEGORIES)) == expected


def test_word_table_forms() -> None:
    table = coco.word_table(CATEGORIES)
    assert table[("dining", "tables")] == TABLE and table[("buses",)] == BUS and table[("persons",)] == PERSON
    assert table[("cellphone",)] == PHONE and ("cell",) not in table


def test_phrase_boxes_all_instances_and_their_union() -> None:
    one = np.asarray([[1, 2, 3, 4]], np.float32)
    np.testing.assert_array_equal(coco.phrase_boxes(one), one)
    two = np.asarray([[0, 5, 10, 8], [4, 1, 6, 20]], np.float32)
    np.testing.assert_array_equal(coco.phrase_boxes(two), [[0, 5, 10, 8], [4, 1, 6, 20], [0, 1, 10, 20]])
    assert coco.phrase_boxes(np.zeros((0, 4), np.float32)).shape == (0, 4)


def write_coco(root: Path) -> None:
    """Three val images (id 7 has no caption); category ids 18 (dog) and 1 (person) out of order."""
    (root / "annotations").mkdir(parents=True)
    images = [{"id": 9, "file_name": "b.jpg"}, {"id": 3, "file_name": "a.jpg"}, {"id": 7, "file_name": "c.jpg"}]
    captions = {"images": images, "annotations": [
        {"image_id": 3, "caption": "Two men walk a dog. "}, {"image_id": 9, "caption": "A dog"},
        {"image_id": 3, "caption": "A man and a cat"}]}
    instances = {"images": images, "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
                 "annotations": [{"image_id": 3, "category_id": 1, "bbox": [10, 20, 30, 40]},
                                 {"image_id": 3, "category_id": 1, "bbox": [50, 0, 10, 10]},
                                 {"image_id": 3, "category_id": 18, "bbox": [0, 0, 5, 5]}]}
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(captions))
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))


def test_read_coco_tiny_files(tmp_path: Path) -> None:
    write_coco(tmp_path)
    images, caps, objects, names = coco.read_coco(tmp_path, "val")
    assert [im["id"] for im in images] == [3, 7, 9] and names == ["person", "dog"]
    assert caps == {3: ["Two men walk a dog.", "A man and a cat"], 9: ["A dog"]}
    assert objects == {3: [(0, [10, 20, 40, 60]), (0, [50, 0, 60, 10]), (1, [0, 0, 5, 5])]}  # xywh -> x1y1x2y2


def test_read_coco_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(LowlabelError, match=r"captions_val2017\.json: not found"):
        coco.read_coco(tmp_path, "val")
    write_coco(tmp_path)
    (tmp_path / "annotations" / "instances_val2017.json").write_text('{"categories": [],\n "annotations": [}')
    with pytest.raises(LowlabelError, match=r"instances_val2017\.json line 2: not valid JSON"):
        coco.read_coco(tmp_path, "val")
    (tmp_path / "annotations" / "instances_val2017.json").write_text('{"categories": []}')
    with pytest.raises(LowlabelError, match="lack a field"):
        coco.read_coco(tmp_path, "val")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU with the official +0.001 side convention, one pair at a time."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 0.001
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 0.001
    if iw <= 0 or ih <= 0:
        return 0.0
    area = ((a[2] - a[0] + 0.001) * (a[3] - a[1] + 0.001)) + ((b[2] - b[0] + 0.001) * (b[3] - b[1] + 0.001))
    return float(iw * ih / (area - iw * ih))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_proposals_are_greedy_nms_by_best_class_score(seed: int) -> None:
    g = np.random.default_rng(seed)
    xy = g.uniform(0, 30, (40, 2))
    boxes = np.concatenate([xy, xy + g.uniform(5, 25, (40, 2))], 1).astype(np.float32)
    scores = g.uniform(0, 1, (40, 3)).astype(np.float32)
    kept: list[int] = []
    for i in sorted(range(40), key=lambda i: -scores[i].max()):
        if len(kept) < 6 and all(_iou(boxes[i], boxes[j]) <= 0.45 for j in kept):
            kept.append(i)
    assert coco.proposals(boxes, scores, 6).tolist() == kept


def _fake_regions(calls: list[str]):
    def image_regions(path: Path, detector: object, extractor: object, num: int, long_side: int):
        calls.append(path.name)
        r = np.arange(num, dtype=np.float32)
        boxes = np.stack([r, r, r + 40, r + 60], 1)  # proposal 0 = (0, 0, 40, 60)
        scores = np.full((num, 2), 0.25, np.float32)
        mask = r < 3
        return np.tile(r[:, None], (1, 5)) + len(calls), boxes, mask, scores
    return image_regions


def test_prepare_split_links_phrases_to_instance_boxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_coco(tmp_path / "coco")
    detector = tmp_path / "det"
    detector.mkdir()
    (detector / "tiny.cfg").write_text("[net]\nwidth=32\n")
    (detector / "tiny.weights").write_bytes(b"\0" * 8)
    calls: list[str] = []
    monkeypatch.setattr(coco, "DarknetDetector", lambda cfg, weights: None)
    monkeypatch.setattr(regions, "backbone", lambda: None)
    monkeypatch.setattr(coco, "image_regions", _fake_regions(calls))
    data = coco.prepare_split(tmp_path / "coco", "val", detector, num_regions=4, cache=tmp_path / "cache")
    assert calls == ["a.jpg", "b.jpg"] and data.image_names == ["a.jpg", "b.jpg"]  # c.jpg has no caption
    assert data.sentences == ["Two men walk a dog.", "A man and a cat", "A dog"]
    assert data.sentence_image.tolist() == [0, 0, 1] and data.phrase_sentence.tolist() == [0, 0, 1, 2]
    assert data.phrase_text == ["men", "dog", "man", "dog"] and data.phrase_class.tolist() == [0, 1, 0, 1]
    assert data.gt_mask.tolist() == [[True, True, True], [True, False, False], [True, True, True],
                                     [False, False, False]]  # b.jpg has no dog instance: not evaluated
    np.testing.assert_array_equal(data.gt_boxes[0], [[10, 20, 40, 60], [50, 0, 60, 10], [10, 0, 60, 60]])
    np.testing.assert_array_equal(data.gt_boxes[1, 0], [0, 0, 5, 5])
    np.testing.assert_array_equal(data.boxes[1, 0], [0, 0, 40, 60])
    assert data.region_mask.tolist() == [[True, True, True, False]] * 2
    # a second call reads the cache: the detector is not run again and the arrays are the same
    monkeypatch.setattr(coco, "image_regions", lambda *a: pytest.fail("the cache was not used"))
    again = coco.prepare_split(tmp_path / "coco", "val", detector, num_regions=4, cache=tmp_path / "cache")
    np.testing.assert_array_equal(again.features, data.features)
    assert not list((tmp_path / "cache").glob(".*tmp*"))


def test_prepare_split_needs_a_darknet_detector(tmp_path: Path) -> None:
    write_coco(tmp_path / "coco")
    with pytest.raises(LowlabelError, match=r"\.cfg and \.weights"):
        coco.prepare_split(tmp_path / "coco", "val", tmp_path)


def test_darknet_detector_boxes_match_coco_ground_truth(shared_data: Path) -> None:
    """Yolo-Fastest's most confident detection on val image 139 is a TV whose box overlaps the annotated TV (IoU
    0.85 when this test was written): the (cx, cy, w, h) decoding and the pixel scaling are right."""
    pytest.importorskip("cv2")
    root, weights = shared_data / "coco_mini", shared_data / "yolo_fastest"
    if not (root / "val2017" / "000000000139.jpg").is_file():
        pytest.skip("coco_mini val image 139 not present")
    _, _, objects, names = coco.read_coco(root, "val")
    detector = coco.DarknetDetector(weights / "yolo-fastest-1.1-xl.cfg", weights / "yolo-fastest-1.1-xl.weights")
    image = detector.cv2.imread(str(root / "val2017" / "000000000139.jpg"))
    boxes, scores = detector(image)
    assert scores.shape == (len(boxes), 80) and scores.min() >= 0 and scores.max() <= 1
    h, w = image.shape[:2]
    assert (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all() and (boxes >= 0).all()
    best = int(scores.max(1).argmax())
    cls = int(scores[best].argmax())
    assert names[cls] == "tv"
    truth = [b for c, b in objects[139] if c == cls]
    assert max(_iou(boxes[best], np.asarray(b)) for b in truth) > 0.5
    kept = coco.proposals(boxes, scores, 30)
    assert len(kept) == 30 and len(set(kept.tolist())) == 30
    ious = [_iou(boxes[i], boxes[j]) for i in kept for j in kept if i < j]
    assert max(ious) <= 0.45
