"""Bad input to SOHO's readers and commands: COCO captions JSON, caption CSV, the official pre-training and VQA
lists, VQA-v2 question/annotation files, image files and ZIP members, and `lowlabel soho train/eval/rank`."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sweep_harness import expect_clear_error, expect_cli_error

from lowlabel.engine.config import save_config
from lowlabel.methods.soho import recipe
from lowlabel.methods.soho.data import (
    load_image,
    read_caption_csv,
    read_coco_captions,
    read_pretrain_json,
    read_vqa_official,
    read_vqa_v2,
)

pytest.importorskip("tokenizers")

VALID_COCO = {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
              "annotations": [{"image_id": 1, "caption": "a red square"}]}


def _png(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


@given(st.binary(max_size=300), st.sampled_from(["coco", "pretrain", "vqa", "questions"]))
def test_json_files_of_any_bytes(tmp_path_factory, content, kind):
    path = tmp_path_factory.mktemp("s") / "ann.json"
    path.write_bytes(content)
    readers = {"coco": lambda: read_coco_captions(path), "pretrain": lambda: read_pretrain_json(path, path.parent),
               "vqa": lambda: read_vqa_official(path, path.parent), "questions": lambda: read_vqa_v2(path)}
    expect_clear_error(f"soho: {kind} json bytes", readers[kind], path)


@given(st.sampled_from(["images", "annotations"]),
       st.sampled_from([None, [], [{}], [{"id": 2}], [{"image_id": 9, "caption": "x"}],
                        [{"image_id": 1, "caption": ""}], [{"image_id": 1, "caption": 3}], "text"]))
def test_coco_json_with_one_broken_field(tmp_path_factory, key, value):
    doc = json.loads(json.dumps(VALID_COCO))
    if value is None:
        del doc[key]
    else:
        doc[key] = value
    path = tmp_path_factory.mktemp("s") / "captions_train.json"
    path.write_text(json.dumps(doc))
    expect_clear_error("soho: coco json fields", lambda: read_coco_captions(path), path, valid_ok=True)


@given(st.binary(max_size=200))
def test_caption_csv_of_any_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("s") / "pairs.csv"
    path.write_bytes(content)
    expect_clear_error("soho: caption csv bytes", lambda: read_caption_csv(path), path, valid_ok=True)


@given(st.binary(max_size=200), st.booleans())
def test_image_of_any_bytes_as_a_file_or_a_zip_member(tmp_path_factory, content, zipped):
    root = tmp_path_factory.mktemp("s")
    image = root / "train2014" / "x.jpg"
    if zipped:
        with zipfile.ZipFile(root / "train2014.zip", "w") as zf:
            zf.writestr("train2014/x.jpg", content)
    else:
        image.parent.mkdir()
        image.write_bytes(content)
    expect_clear_error("soho: image bytes", lambda: load_image(image), "x.jpg")


@given(st.sampled_from(["missing", "empty", "corrupt"]))
def test_train_command_on_broken_data(tmp_path_factory, case):
    root = tmp_path_factory.mktemp("s")
    path = root / "pairs.csv"
    if case == "empty":
        path.write_text("")
    elif case == "corrupt":
        (root / "img.png").write_bytes(b"not an image")
        path.write_text("image,caption\nimg.png,a red square\n")
    names = [path.name] if case != "corrupt" else ["img.png"]
    expect_cli_error(f"soho: train on {case} data", ["soho", "train", "--data", path, "--out", root / "runs",
                                                     "--device", "cpu", "--threads", "1"], names,
                     run_root=root / "runs")


def test_eval_and_rank_on_a_broken_checkpoint(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000001.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"garbage")
    save_config(recipe.tiny_config(), tmp_path / "run" / "config.yaml")  # the run's own (tiny) model
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"image,caption\n{_png(tmp_path / 'a.png')},a red square\n")
    expect_cli_error("soho: eval on a broken checkpoint", ["soho", "eval", ckpt, "--data", csv, "--device", "cpu"],
                     ckpt.name)
    expect_cli_error("soho: rank on a broken checkpoint", ["soho", "rank", ckpt, "a square", "--data", csv,
                                                           "--device", "cpu"], ckpt.name)
