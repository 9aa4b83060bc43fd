"""Bad input to CKD grounding: its features NPZ, Flickr30K Entities sentences and annotations, ReferItGame lists,
detections files, COCO annotations, the losses' tensors, and the `lowlabel grounding` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sweep_harness import expect_clear_error, expect_cli_error

from lowlabel.methods.grounding_ckd import coco, losses
from lowlabel.methods.grounding_ckd.data import read_entity_boxes, read_entity_sentences, read_referit_list
from lowlabel.methods.grounding_ckd.detections import read_detections
from lowlabel.methods.grounding_ckd.features import ARRAYS, GroundingSet, read_grounding_set, write_grounding_set

ANNOTATION = """<annotation>
  <object><name>18</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>101</xmax><ymax>201</ymax></bndbox></object>
  <object><name>19</name><nobndbox>1</nobndbox></object>
</annotation>
"""
NON_UTF8 = b"[/EN#1/people A \xff\xfe man]\n"


def valid_set() -> GroundingSet:
    """Two images of three proposals, one caption each with one phrase."""
    boxes = np.tile(np.asarray([[0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 45]], np.float32), (2, 1, 1))
    return GroundingSet(["a.jpg", "b.jpg"], np.ones((2, 3, 4), np.float32), boxes, np.ones((2, 3), bool),
                        np.full((2, 3, 2), 0.5, np.float32), ["cat", "dog"], np.asarray([0, 1]), ["a cat", "a dog"],
                        np.asarray([0, 1]), ["a cat", "a dog"], np.asarray([0, 1]), boxes[:, :1], np.ones((2, 1), bool))


@given(st.binary(max_size=300))
def test_features_file_of_any_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("f") / "train.npz"
    path.write_bytes(content)
    expect_clear_error("grounding: features file bytes", lambda: read_grounding_set(path), path)


BROKEN_ARRAYS = st.sampled_from([np.zeros(0), np.full((2, 3, 4), np.nan, np.float32), np.asarray(["x", "y"]),
                                 np.asarray([-5, 7]), np.zeros((2, 3), np.float32), np.ones((1, 3, 4), np.float32)])


@given(st.sampled_from(sorted(ARRAYS)), BROKEN_ARRAYS)
def test_features_file_with_one_broken_array(tmp_path_factory, name, broken):
    path = tmp_path_factory.mktemp("f") / "val.npz"
    write_grounding_set(path, valid_set())
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[name] = broken
    np.savez(path, **arrays)
    expect_clear_error("grounding: features file arrays", lambda: read_grounding_set(path), path, valid_ok=True)


@given(st.lists(st.text(alphabet="[]/EN#0123 ab\t", max_size=30), max_size=4))
def test_entity_sentences_of_any_markup(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("s") / "42.txt"
    path.write_text("\n".join(lines))
    expect_clear_error("grounding: Flickr30K sentences", lambda: read_entity_sentences(path), path, valid_ok=True)


def test_entity_sentences_not_utf8(tmp_path):
    path = tmp_path / "42.txt"
    path.write_bytes(NON_UTF8)
    expect_clear_error("grounding: Flickr30K sentences", lambda: read_entity_sentences(path), path)


@given(st.integers(0, len(ANNOTATION) - 1), st.binary(max_size=8))
def test_entity_annotation_cut_or_garbled(tmp_path_factory, cut, tail):
    path = tmp_path_factory.mktemp("a") / "42.xml"
    path.write_bytes(ANNOTATION.encode()[:cut] + tail)
    expect_clear_error("grounding: Flickr30K annotation", lambda: read_entity_boxes(path), path)


@given(st.sampled_from(["<xmin>a</xmin>", "<xmin></xmin>", "<xmin>500</xmin>", ""]))
def test_entity_annotation_bad_box(tmp_path_factory, xmin):
    path = tmp_path_factory.mktemp("a") / "42.xml"
    path.write_text(ANNOTATION.replace("<xmin>11</xmin>", xmin))
    expect_clear_error("grounding: Flickr30K annotation", lambda: read_entity_boxes(path), path)


@given(st.lists(st.text(alphabet="ab.jpg\t,-1 9nan", max_size=30), min_size=1, max_size=4))
def test_referit_list_of_any_lines(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("r") / "refs.txt"
    path.write_text("\n".join(lines))
    expect_clear_error("grounding: ReferIt list", lambda: read_referit_list(path), path, valid_ok=True)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["boxes", "scores", "logits", "labels", "image", "x"]), inner, max_size=3),
                    max_leaves=12)


@given(JSON, JSON)
def test_detections_json_of_any_structure(tmp_path_factory, classes, images):
    path = tmp_path_factory.mktemp("d") / "dets.json"
    path.write_text(json.dumps({"class_names": classes, "images": images}))
    expect_clear_error("grounding: detections JSON", lambda: read_detections(path), path, valid_ok=True)


@given(st.binary(max_size=200), st.sampled_from(["dets.json", "dets.npz"]))
def test_detections_file_of_any_bytes(tmp_path_factory, content, name):
    path = tmp_path_factory.mktemp("d") / name
    path.write_bytes(content)
    expect_clear_error("grounding: detections bytes", lambda: read_detections(path), path, valid_ok=True)


@given(st.binary(max_size=200), st.sampled_from(["captions", "instances"]))
def test_coco_annotations_of_any_bytes(tmp_path_factory, content, kind):
    root = tmp_path_factory.mktemp("coco")
    (root / "annotations").mkdir()
    for k in ("captions", "instances"):
        (root / "annotations" / f"{k}_val2017.json").write_text('{"images": [], "annotations": [], "categories": []}')
    (root / "annotations" / f"{kind}_val2017.json").write_bytes(content)
    expect_clear_error("grounding: COCO annotations", lambda: coco.read_coco(root, "val"), f"{kind}_val2017.json",
                       valid_ok=True)


SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))


@given(SHAPES, SHAPES)
def test_loss_shapes(region_shape, phrase_shape):
    b, r, _, d = region_shape
    b2, p, _, d2 = phrase_shape
    region, phrase = torch.randn(b, r, d), torch.randn(b2, p, d2)
    mask = torch.ones(b2, p, dtype=torch.bool)
    teacher, ious = torch.rand(b2, p, r), torch.rand(b, r, r)
    same = (b, d) == (b2, d2)
    expect_clear_error("grounding: nce_loss shapes", lambda: losses.nce_loss(region, phrase, mask), "region",
                       valid_ok=same)
    expect_clear_error("grounding: distillation shapes",
                       lambda: losses.distillation_loss(region, phrase, mask, teacher, ious), "region",
                       valid_ok=same)


def test_distillation_bad_teacher_and_ious():
    region, phrase, mask = torch.randn(2, 4, 3), torch.randn(2, 2, 3), torch.ones(2, 2, dtype=torch.bool)
    expect_clear_error("grounding: distillation shapes", lambda: losses.distillation_loss(
        region, phrase, mask, torch.rand(2, 2, 5), torch.rand(2, 4, 4)), "teacher")
    expect_clear_error("grounding: distillation shapes", lambda: losses.distillation_loss(
        region, phrase, mask, torch.rand(2, 2, 4), torch.rand(2, 4, 3)), "region_ious")
    expect_clear_error("grounding: distillation shapes", lambda: losses.distillation_loss(
        region, phrase, mask, torch.rand(2, 2, 4), torch.rand(2, 4, 4), teacher_norm="none"), "teacher_norm")


@given(st.binary(min_size=1, max_size=100))
def test_cli_train_on_a_corrupt_features_file(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    data.mkdir()
    (data / "train.npz").write_bytes(content)
    write_grounding_set(data / "val.npz", valid_set())
    expect_cli_error("cli: grounding train corrupt data", ["grounding", "train", "--data", data, "--out", root / "runs",
                                                           "--device", "cpu", "--set", "embedder=random:8"],
                     "train.npz", run_root=root / "runs")


@pytest.mark.parametrize("args", [["--set", "batch_size=x"], ["--set", "nope=1"], ["--config", "missing.yaml"]])
def test_cli_train_bad_config(tmp_path, args):
    write_grounding_set(tmp_path / "data" / "train.npz", valid_set())
    write_grounding_set(tmp_path / "data" / "val.npz", valid_set())
    expect_cli_error("cli: grounding train bad config", ["grounding", "train", "--data", tmp_path / "data", "--out",
                                                         tmp_path / "runs", "--device", "cpu", *args],
                     [a.split("=")[0] for a in args[1:]], run_root=tmp_path / "runs")


@given(st.binary(max_size=100))
def test_cli_ground_with_a_corrupt_checkpoint(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("ground")
    (root / "step_00000002.pt").write_bytes(content)
    write_grounding_set(root / "new.npz", valid_set())
    expect_cli_error("cli: grounding ground corrupt checkpoint", [
        "grounding", "ground", root / "step_00000002.pt", root / "new.npz", "--out", root / "g.json", "--device", "cpu",
        "--config", _tiny_config(root)], "step_00000002.pt")
    assert not (root / "g.json").exists()


def _tiny_config(root: Path) -> Path:
    path = root / "tiny.yaml"
    path.write_text("region_dim: 4\nembedder: random:8\ntoken_dim: 8\nlstm_dim: 4\nhidden_dim: 8\nembed_dim: 4\n")
    return path


def test_cli_prepare_coco_on_corrupt_captions(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_val2017.json").write_bytes(b"\x00{not json")
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
    expect_cli_error("cli: grounding prepare-coco", ["grounding", "prepare-coco", tmp_path, "--detector", tmp_path,
                                                     "--splits", "val", "--out", tmp_path / "out"],
                     "captions_val2017.json")
    assert not (tmp_path / "out").exists()


def _prepare_inputs(root: Path) -> dict[str, Path]:
    """A one-image Flickr30K Entities folder (train split), its image (never decoded: every error comes first), a
    detections JSON and a phrase -> class table."""
    (root / "flickr" / "Sentences").mkdir(parents=True)
    (root / "flickr" / "Annotations").mkdir()
    (root / "flickr" / "Sentences" / "42.txt").write_text("[/EN#18/people A man] wears [/EN#19/clothing ears]\n")
    (root / "flickr" / "Annotations" / "42.xml").write_text(ANNOTATION)
    (root / "flickr" / "train.txt").write_text("42\n")
    (root / "images").mkdir()
    (root / "images" / "42.jpg").write_bytes(b"not decoded")
    dets = {"class_names": ["person"], "images": {"42.jpg": {"boxes": [[0, 0, 5, 5]], "scores": [[0.9]]}}}
    (root / "dets.json").write_text(json.dumps(dets))
    (root / "table.json").write_text('{"a man": "person"}')
    return {"flickr": root / "flickr", "images": root / "images", "dets": root / "dets.json",
            "table": root / "table.json"}


def _prepare_args(paths: dict[str, Path], out: Path, *extra: object) -> list[object]:
    return ["grounding", "prepare", paths["images"], "--flickr", paths["flickr"], "--splits", "train",
            "--detections", paths["dets"], "--match", "table", "--table", paths["table"], "--out", out, *extra]


@given(st.one_of(st.binary(max_size=100), JSON.map(lambda j: json.dumps({"class_names": ["person"], "images": j})
                                                    .encode())))
def test_cli_prepare_with_broken_detections(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("prep")
    paths = _prepare_inputs(root)
    paths["dets"].write_bytes(content)
    expect_cli_error("cli: grounding prepare detections", _prepare_args(paths, root / "out"), "dets.json")
    assert not (root / "out").exists()


@pytest.mark.parametrize(("breakage", "named"), [
    (lambda p: (p["flickr"] / "train.txt").unlink(), "train.txt"),  # missing split file
    (lambda p: (p["flickr"] / "Sentences" / "42.txt").write_text("[/EN#7/people A man]\n"), "42.txt"),  # no box
    (lambda p: p["dets"].write_text(json.dumps({"class_names": ["person"], "images": {
        "42.jpg": {"boxes": [[0, 0, 5, 5]], "scores": [[0.9]]}, "43.jpg": {"boxes": [], "scores": []}}})),
     "dets.json"),  # detections for an image no annotation lists
    (lambda p: p["dets"].write_text('{"class_names": ["person"], "images": {}}'), "dets.json"),  # none for 42.jpg
    (lambda p: (p["images"] / "42.jpg").unlink(), "42.jpg"),
    (lambda p: p["table"].write_text('{"a man": "giraffe"}'), "table.json"),
])
def test_cli_prepare_bad_inputs_name_the_file(tmp_path, breakage, named):
    paths = _prepare_inputs(tmp_path)
    breakage(paths)
    expect_cli_error("cli: grounding prepare", _prepare_args(paths, tmp_path / "out"), named)
    assert not (tmp_path / "out").exists()


def test_cli_prepare_needs_one_source_of_each_kind(tmp_path):
    paths = _prepare_inputs(tmp_path)
    expect_cli_error("cli: grounding prepare", [*_prepare_args(paths, tmp_path / "out"), "--detector", tmp_path],
                     "--detections FILE or as --detector DIR")
    expect_cli_error("cli: grounding prepare", [*_prepare_args(paths, tmp_path / "out"), "--referit", paths["dets"]],
                     "--flickr ROOT or as --referit LIST")
    expect_cli_error("cli: grounding prepare", ["grounding", "prepare", paths["images"], "--flickr", paths["flickr"],
                                                "--splits", "train", "--detections", paths["dets"], "--match",
                                                "table"], "--table FILE")
