"""`lowlabel grounding prepare` on a tiny Flickr30K-Entities-style folder and tiny ReferItGame lists written here
(uniform-colour images of a few pixels, a detections JSON; the backbone is the identity, so a region's feature is
its ImageNet-normalised colour), then `grounding train` for 2 steps on the output; error paths name the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lowlabel.errors import LowlabelError
from lowlabel.methods.grounding_ckd import regions
from lowlabel.methods.grounding_ckd.cli import app
from lowlabel.methods.grounding_ckd.features import read_grounding_set
from lowlabel.methods.grounding_ckd.model import RegionFeatureExtractor
from lowlabel.methods.grounding_ckd.prepare import prepare

cv2 = pytest.importorskip("cv2")

IMAGENET_MEAN, IMAGENET_STD = np.asarray([0.485, 0.456, 0.406]), np.asarray([0.229, 0.224, 0.225])
COLOURS = {"1.jpg": (255, 0, 0), "2.jpg": (0, 128, 255), "3.jpg": (40, 200, 90)}  # RGB, one per image
CLASSES = ["person", "dog", "cat"]
TINY_TRAIN = ["--iterations", "2", "--set", "embedder=random:8", "--set", "token_dim=8", "--set", "lstm_dim=8",
              "--set", "hidden_dim=16", "--set", "embed_dim=8", "--set", "batch_size=2", "--device", "cpu",
              "--threads", "1"]
SENTENCES = {
    "1": "[/EN#10/people A man] holds [/EN#11/animals a small dog]\n"
         "[/EN#10/people The man] sits on [/EN#12/other a bench]\n",
    "2": "[/EN#20/animals A dog] runs [/EN#21/scene on grass]\n",
    "3": "[/EN#30/people A woman] with [/EN#31/animals a cat]\n",
}
OBJECTS = {
    "1": [("10", (2, 2, 6, 9)), ("11", (8, 3, 10, 6)), ("11", (11, 5, 14, 8)), ("12", None)],
    "2": [("20", (3, 4, 12, 10)), ("21", None)],
    "3": [("30", (1, 1, 5, 5)), ("31", (6, 2, 13, 9))],
}
DETECTIONS = {  # boxes (x1, y1, x2, y2) inside the 16 x 12 images, scores over CLASSES
    "1.jpg": {"boxes": [[1, 1, 6, 9], [7, 2, 14, 8], [0, 0, 4, 4]],
              "scores": [[.9, .1, 0], [.2, .7, .1], [.1, .1, .8]]},
    "2.jpg": {"boxes": [[2, 3, 12, 10], [5, 1, 9, 5]], "scores": [[.1, .8, .1], [.5, .2, .3]]},
    "3.jpg": {"boxes": [[6, 2, 13, 9]], "scores": [[.05, .15, .8]]},
}
TABLE = {"a man": "person", "the man": "person", "a small dog": "dog", "a dog": "dog", "a woman": "person",
         "a cat": "cat"}


@pytest.fixture(autouse=True)
def _identity_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The feature map is the normalised image itself (3 channels, stride 1): RoI-align on a uniform image gives
    its colour, worked out by hand in `colour_feature`."""
    monkeypatch.setattr(regions, "backbone", lambda: RegionFeatureExtractor(torch.nn.Identity()))


def colour_feature(rgb: tuple[int, int, int]) -> np.ndarray:
    return (np.asarray(rgb) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def write_images(folder: Path, names: dict[str, tuple[int, int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rgb in names.items():
        # PNG bytes (lossless) even under a .jpg name: images are decoded by their content
        (folder / name).write_bytes(cv2.imencode(".png", np.full((12, 16, 3), rgb[::-1], np.uint8))[1].tobytes())
    return folder


def write_flickr(root: Path, *, splits: dict[str, str] | None = None, sentences: dict[str, str] = SENTENCES) -> Path:
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    for image_id, text in sentences.items():
        (root / "Sentences" / f"{image_id}.txt").write_text(text)
        objects = "".join(
            f"<object><name>{n}</name>" + ("<nobndbox>1</nobndbox>" if box is None else
                                           "<bndbox>" + "".join(f"<{t}>{v + 1}</{t}>" for t, v in zip(
                                               ("xmin", "ymin", "xmax", "ymax"), box, strict=True)) + "</bndbox>")
            + "</object>\n" for n, box in OBJECTS[image_id])
        (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>\n{objects}</annotation>\n")
    for split, ids in (splits or {"train": "1\n2\n", "val": "3\n"}).items():
        (root / f"{split}.txt").write_text(ids)
    return root


def write_json(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content))
    return path


def flickr_case(tmp_path: Path) -> dict:
    return {"images_dir": write_images(tmp_path / "images", COLOURS), "flickr": write_flickr(tmp_path / "flickr"),
            "detections": write_json(tmp_path / "dets.json", {"class_names": CLASSES, "images": DETECTIONS}),
            "match": "table", "table": write_json(tmp_path / "table.json", TABLE), "num_regions": 2,
            "long_side": 32}


def test_flickr_folder_to_features_files_and_two_training_steps(tmp_path: Path) -> None:
    case = flickr_case(tmp_path)
    out = tmp_path / "prepared"
    result = CliRunner().invoke(app, [
        "prepare", str(case["images_dir"]), "--flickr", str(case["flickr"]), "--detections", str(case["detections"]),
        "--match", "table", "--table", str(case["table"]), "--regions", "2", "--long-side", "32", "--out", str(out),
        "--threads", "1"])
    assert result.exit_code == 0, result.output
    train, val = read_grounding_set(out / "train.npz"), read_grounding_set(out / "val.npz")
    assert train.image_names == ["1.jpg", "2.jpg"] and val.image_names == ["3.jpg"]
    assert train.class_names == CLASSES
    assert train.sentences == ["A man holds a small dog", "The man sits on a bench", "A dog runs on grass"]
    assert train.sentence_image.tolist() == [0, 0, 1] and train.phrase_sentence.tolist() == [0, 0, 1, 1, 2, 2]
    assert train.phrase_text == ["A man", "a small dog", "The man", "a bench", "A dog", "on grass"]
    assert train.phrase_class.tolist() == [0, 1, 0, -1, 1, -1]  # bench and grass are not in the table
    # ground truth: 1-based corners in the XML -> 0-based; the dog's two boxes -> their union; no box -> not evaluated
    assert train.gt_mask[:, 0].tolist() == [True, True, True, False, True, False]
    np.testing.assert_array_equal(train.gt_boxes[[0, 1, 2, 4], 0], [[2, 2, 6, 9], [8, 3, 14, 8], [2, 2, 6, 9],
                                                                    [3, 4, 12, 10]])
    # proposals: the first 2 detections of each image, zero-padded past the file's count
    np.testing.assert_array_equal(train.boxes[0], DETECTIONS["1.jpg"]["boxes"][:2])
    np.testing.assert_allclose(train.scores[1], DETECTIONS["2.jpg"]["scores"], rtol=1e-6)
    assert val.region_mask.tolist() == [[True, False]] and not val.scores[0, 1].any()
    np.testing.assert_allclose(val.scores[0, 0], [.05, .15, .8], rtol=1e-6)
    for data, names in ((train, ["1.jpg", "2.jpg"]), (val, ["3.jpg"])):
        for i, name in enumerate(names):
            expected = np.where(data.region_mask[i][:, None], colour_feature(COLOURS[name]), 0.0)
            np.testing.assert_allclose(data.features[i], expected, atol=1e-5)
    result = CliRunner().invoke(app, ["train", "--data", str(out), "--out", str(tmp_path / "runs"), *TINY_TRAIN])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "grounding_ckd").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["phrases"] == 2  # the val file's two boxed phrases were evaluated


class BagOfWords:
    """Sentence encoder stand-in: the count vector of the words (cosine worked out by hand in the test)."""

    vocab = ("red", "ball", "the", "dog", "on", "left", "cat", "a", "tree")

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[float(t.split().count(w)) for w in self.vocab] for t in texts])


def test_referit_lists_with_similarity_matching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lowlabel.nn.text

    monkeypatch.setattr(lowlabel.nn.text, "sentence_encoder", lambda spec: BagOfWords())
    images = write_images(tmp_path / "images", {"a.png": (10, 20, 30), "b.png": (200, 100, 0), "c.png": (0, 0, 0)})
    lists = tmp_path / "refs"
    lists.mkdir()
    (lists / "train.txt").write_text("a.png\tred ball\t1,1,5,5\n# a comment\nb.png\tdog on left\t0\t0\t3\t3\n"
                                     "a.png\tthe dog\t2 2 8 8\na.png\ta tree\t0,0,2,2\n")
    (lists / "val.txt").write_text("c.png\tcat\t1,1,4,4\n")
    dets = write_json(tmp_path / "dets.json", {"class_names": ["ball", "dog", "cat"], "images": [
        {"image": "a.png", "boxes": [[1, 1, 5, 5], [2, 2, 8, 8]], "labels": ["ball", "dog"], "scores": [.9, .6]},
        {"image": "b.png", "boxes": [[0, 0, 3, 3]], "labels": [1], "scores": [.7]},
        {"image": "c.png", "boxes": [[1, 1, 4, 4]], "labels": ["cat"], "scores": [.8]}]})
    sets = dict(prepare(images, referit=[lists / "train.txt", lists / "val.txt"], detections=dets,
                        match="similarity", num_regions=3, long_side=16))
    train = sets["train"]
    assert list(sets) == ["train", "val"] and train.image_names == ["a.png", "b.png"]
    assert train.sentences == ["red ball; the dog; a tree", "dog on left"]  # one entry per image, as "merge" files
    assert train.phrase_text == ["red ball", "the dog", "a tree", "dog on left"]
    # cosines by hand: red ball ~ ball 1/sqrt(2); the dog ~ dog 1/sqrt(2); dog on left ~ dog 1/sqrt(3) (all >= 0.5);
    # a tree shares no word with a class (0): no class
    assert train.phrase_class.tolist() == [0, 1, -1, 1] and sets["val"].phrase_class.tolist() == [2]
    np.testing.assert_array_equal(train.gt_boxes[:, 0], [[1, 1, 5, 5], [2, 2, 8, 8], [0, 0, 2, 2], [0, 0, 3, 3]])
    np.testing.assert_allclose(train.scores[0, :2], [[.9, 0, 0], [0, .6, 0]], rtol=1e-6)
    assert train.region_mask.tolist() == [[True, True, False], [True, False, False]]


def test_missing_split_file_is_named(tmp_path: Path) -> None:
    case = flickr_case(tmp_path)
    with pytest.raises(LowlabelError, match=r"test\.txt: split file not found"):
        list(prepare(**case, splits=("train", "val", "test")))


def test_phrase_with_no_box_is_named(tmp_path: Path) -> None:
    case = flickr_case(tmp_path)
    (case["flickr"] / "Sentences" / "2.txt").write_text("[/EN#20/animals A dog] sees [/EN#99/people a man]\n")
    with pytest.raises(LowlabelError, match=r"2\.txt, sentence 1: phrase 'a man' \[/EN#99 has no <object> in .*2\.xml"):
        list(prepare(**case))
    refs = tmp_path / "train.txt"
    refs.write_text("1.jpg\ta man\t1,1,5,5\n2.jpg\ta dog\n")
    with pytest.raises(LowlabelError, match=r"train\.txt line 2: expected"):
        list(prepare(case["images_dir"], referit=[refs], detections=case["detections"]))


def test_detections_must_match_the_annotated_images(tmp_path: Path) -> None:
    case = flickr_case(tmp_path)
    write_json(case["detections"], {"class_names": CLASSES, "images": {**DETECTIONS, "4.png": DETECTIONS["3.jpg"]}})
    with pytest.raises(LowlabelError, match=r"dets\.json: detections for 1 image\(s\) that no annotation lists, "
                                            r"e\.g\. '4\.png'"):
        list(prepare(**case))
    write_json(case["detections"], {"class_names": CLASSES, "images": {"1.jpg": DETECTIONS["1.jpg"]}})
    with pytest.raises(LowlabelError, match=r"dets\.json: no detections for 2 annotated image\(s\), e\.g\. '2\.jpg'"):
        list(prepare(**case))
