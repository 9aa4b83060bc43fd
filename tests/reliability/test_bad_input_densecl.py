"""Bad input to DenseCL's fine-tuning evaluation: COCO annotation files (corrupt bytes, records with a key missing
or of the wrong type, wrong image size), missing checkpoints and label budgets through `lowlabel densecl finetune`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sweep_harness import expect_clear_error, expect_cli_error

from lowlabel.methods.densecl.data import coco_labelled


def _coco(root: Path) -> dict:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "train").mkdir(exist_ok=True)
    Image.fromarray(np.full((6, 8, 3), 90, dtype=np.uint8)).save(root / "train" / "a.png")
    return {"images": [{"id": 1, "file_name": "a.png", "height": 6, "width": 8}],
            "categories": [{"id": 3, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "area": 4.0, "iscrowd": 0,
                             "segmentation": [[1, 1, 3, 1, 3, 3]], "bbox": [1, 1, 2, 2]}]}


@given(st.binary(max_size=120))
def test_annotation_file_of_any_bytes(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("coco")
    _coco(root)
    ann = root / "annotations" / "instances_train.json"
    ann.write_bytes(content)
    expect_clear_error("densecl: COCO annotations", lambda: coco_labelled(ann, root / "train", size=6), ann)


@given(st.sampled_from(["images", "annotations", "categories"]), st.integers(0, 7),
       st.sampled_from([None, "x", -3, [], {}]))
def test_annotation_record_broken(tmp_path_factory, part, key_index, value):
    root = tmp_path_factory.mktemp("coco")
    payload = _coco(root)
    record = payload[part][0]
    key = sorted(record)[key_index % len(record)]
    if value is None:
        del record[key]
    else:
        record[key] = value
    ann = root / "annotations" / "instances_train.json"
    ann.write_text(json.dumps(payload))
    expect_clear_error("densecl: COCO record", lambda: coco_labelled(ann, root / "train", size=6),
                       [ann, "a.png"], valid_ok=True)


@given(st.sampled_from(["missing", "empty-folder"]))
def test_finetune_without_a_checkpoint(tmp_path_factory, name):
    root = tmp_path_factory.mktemp("runs")
    (root / "empty-folder").mkdir()
    expect_cli_error("cli: densecl finetune --checkpoint", ["densecl", "finetune", "--checkpoint", str(root / name),
                                                            "--device", "cpu"], name)
