"""Bad input to IRSGS (sg_retrieval): every reader of the official formats, the dataset manifest, images, node
features and the `lowlabel train sg_retrieval` command, including a non-UTF-8 folder name and a full disk."""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sweep_harness import expect_clear_error, expect_cli_error

from lowlabel.methods.sg_retrieval import data as readers
from lowlabel.methods.sg_retrieval.sources import RetrievalData, official_data

RECORD = {"image_id": 7, "objects": [{"object_id": 1, "names": ["man"], "attributes": ["tall"]},
                                     {"object_id": 2, "names": ["horse"]}],
          "relationships": [{"predicate": "riding", "subject_id": 1, "object_id": 2}]}
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
                               ["image_id", "objects", "relationships", "names", "object_id", "attributes",
                                "predicate", "subject_id", "subject", "object"]), inner, max_size=4), max_leaves=12)


def _is_json(content: bytes) -> bool:
    try:
        json.loads(content)
    except ValueError:
        return False
    return True


def dataset(root: Path, n: int = 12) -> Path:
    """A valid user folder (conventional names): n two-object graphs, two captions each, the last 4 test."""
    root.mkdir(parents=True, exist_ok=True)
    records = [{**RECORD, "image_id": i} for i in range(n)]
    (root / "scene_graphs.json").write_text(json.dumps(records))
    (root / "captions.json").write_text(json.dumps({"annotations": [
        {"image_id": i, "caption": c} for i in range(n) for c in (f"a man {i}", "a horse")]}))
    (root / "split.json").write_text(json.dumps({str(i): "train" if i < n - 4 else "test" for i in range(n)}))
    return root


@given(st.binary(max_size=300))
def test_scene_graph_json_of_any_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("g") / "my graphs.json"
    path.write_bytes(content)
    expect_clear_error("sgr: scene-graph JSON bytes", lambda: readers.read_graphs(path), path, valid_ok=True)


@given(st.data())
def test_truncated_scene_graph_json(tmp_path_factory, data):
    full = json.dumps([RECORD, {**RECORD, "image_id": 8}]).encode()
    path = tmp_path_factory.mktemp("g") / "graphs.json"
    path.write_bytes(full[: data.draw(st.integers(1, len(full) - 1))])
    expect_clear_error("sgr: truncated scene-graph JSON", lambda: readers.read_graphs(path), path)


@given(st.lists(JSON_VALUES, min_size=1, max_size=3))
def test_scene_graph_records_of_any_shape(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("g") / "graphs.json"
    path.write_text(json.dumps(records))
    expect_clear_error("sgr: scene-graph record shapes", lambda: readers.read_graphs(path), path, valid_ok=True)


@given(st.sampled_from(["no objects", "missing subject", "missing object"]), st.integers(-5, 50))
def test_graphs_without_objects_or_with_dangling_relations(tmp_path_factory, case, ref):
    record = json.loads(json.dumps(RECORD))
    if case == "no objects":
        record["objects"] = []
        record["relationships"] = []
    else:
        key = "subject_id" if case == "missing subject" else "object_id"
        record["relationships"][0][key] = ref if ref not in (1, 2) else 99
    path = tmp_path_factory.mktemp("g") / "graphs.json"
    path.write_text(json.dumps([record]))
    message = expect_clear_error("sgr: empty graph / dangling relation", lambda: readers.read_graphs(path), path)
    assert "image 7" in message


@given(st.binary(max_size=200))
def test_graph_pickle_of_any_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("p") / "graphs.pkl"
    path.write_bytes(content)
    expect_clear_error("sgr: graph pickle bytes", lambda: readers.read_graph_pickle(path), path, valid_ok=True)


@given(st.sampled_from([[{"node_labels": [], "adj": np.zeros((0, 0))}], [{"node_labels": ["a"], "adj": "x"}],
                        [{"node_labels": ["a", "b"], "adj": np.full((2, 2), np.nan)}], [{"node_labels": 3, "adj": 1}],
                        [{"node_labels": [1, 2], "adj": np.eye(2)}], {"node_labels": ["a"]}, [7]]))
def test_graph_pickle_records_of_the_wrong_shape(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("p") / "graphs.pkl"
    path.write_bytes(pickle.dumps(records))
    expect_clear_error("sgr: graph pickle records", lambda: readers.read_graph_pickle(path), path)


@given(st.sampled_from(["nan", "inf", "1-d", "3-d", "ids", "text", "keys"]), st.integers(0, 11))
def test_resnet_features_nan_inf_and_wrong_shapes(tmp_path_factory, case, where):
    path = tmp_path_factory.mktemp("f") / "my feats.h5"
    features = np.ones((3, 4), dtype=np.float32)
    features.flat[where] = {"nan": np.nan, "inf": -np.inf}.get(case, 1.0)
    shaped = {"1-d": features.ravel(), "3-d": features[None], "text": np.array([b"a", b"b", b"c"])}.get(case, features)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("resnet_feature" if case != "keys" else "features", data=shaped)
        fh.create_dataset("id", data=np.arange(2 if case == "ids" else 3))
    expect_clear_error("sgr: ResNet features", lambda: readers.read_resnet_features(path), path)


@given(st.binary(max_size=100))
def test_resnet_features_of_any_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("f") / "resnet152.h5"
    path.write_bytes(content)
    expect_clear_error("sgr: ResNet features bytes", lambda: readers.read_resnet_features(path), path)


@given(st.sampled_from(["nan", "inf", "shape", "ids", "bytes", "objects"]))
def test_relevance_npy_broken(tmp_path_factory, case):
    folder = tmp_path_factory.mktemp("r")
    matrix, ids = folder / "x_sbert_mean.npy", folder / "x_sbert_img_id.npy"
    rel = np.eye(3, dtype=np.float32)
    rel[0, 1] = {"nan": np.nan, "inf": np.inf}.get(case, 0.5)
    np.save(matrix, rel[:, :2] if case == "shape" else np.array([{}, 1], dtype=object) if case == "objects" else rel)
    np.save(ids, np.arange(2 if case == "ids" else 3))
    if case == "bytes":
        matrix.write_bytes(b"\x93NUMPY garbage")
    expect_clear_error("sgr: relevance npy", lambda: readers.read_relevance(matrix, ids), matrix.name)


@given(st.one_of(st.binary(max_size=120), JSON_VALUES.map(lambda v: json.dumps({"annotations": v}).encode())))
def test_captions_of_any_content(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("c") / "my captions.json"
    path.write_bytes(content)
    expect_clear_error("sgr: captions", lambda: readers.read_captions(path), path, valid_ok=True)


@given(st.binary(max_size=120))
def test_human_ratings_of_any_bytes(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("h")
    (folder / "triplets.csv").write_text("triplet_id,query_id,target_id1,target_id2\n1,1,2,3\n")
    (folder / "answers.csv").write_bytes(content)
    expect_clear_error("sgr: human ratings CSV", lambda: readers.read_human_ratings(
        folder / "triplets.csv", folder / "answers.csv"), "answers.csv", valid_ok=True)


@given(st.one_of(st.binary(max_size=80), JSON_VALUES.map(lambda v: json.dumps(v).encode())))
def test_manifest_of_any_content(tmp_path_factory, content):
    folder = dataset(tmp_path_factory.mktemp("m"))
    manifest = folder / "set.yaml"
    manifest.write_bytes(content)
    expect_clear_error("sgr: dataset manifest", lambda: official_data(manifest, encoder="tfidf"), manifest,
                       valid_ok=True)


@given(st.binary(max_size=64))
def test_unreadable_images(tmp_path_factory, content):
    from lowlabel.methods.sg_retrieval.graphs import build_graph
    from lowlabel.methods.sg_retrieval.recipe import image_of

    folder = tmp_path_factory.mktemp("i")
    (folder / "7.png").write_bytes(content)
    bundle = RetrievalData([build_graph("7", ["man"], [[]], [])], torch.eye(1), torch.arange(0), torch.arange(1),
                           "tfidf", images=folder)
    expect_clear_error("sgr: unreadable image", lambda: image_of(bundle, 0), "7.png", valid_ok=True)


@given(st.sampled_from(["nan", "inf"]))
def test_glove_file_with_nan_or_inf_vectors(tmp_path_factory, value):
    from lowlabel.methods.sg_retrieval.graphs import PackedGraphs, build_graph
    from lowlabel.methods.sg_retrieval.recipe import node_table

    glove = tmp_path_factory.mktemp("v") / "my vectors.txt"
    glove.write_text(f"man 0.1 {value}\nhorse 0.2 0.3\n")
    packed = PackedGraphs([build_graph("1", ["man", "horse"], [[], []], [])])
    expect_clear_error("sgr: NaN/Inf node features", lambda: node_table(packed, f"glove:{glove}", torch.device("cpu")),
                       glove)


TRAIN = ["train", "sg_retrieval", "--device", "cpu", "--threads", "1", "--set", "data.label_embedder=random:8",
         "--set", "data.sentence_encoder=tfidf", "--set", "model.hidden=8", "--set", "data.batch_size=4",
         "--set", "train.max_steps=4", "--set", "train.checkpoint_every=2"]


@given(st.binary(max_size=120).filter(lambda b: not _is_json(b)))
def test_train_cli_on_a_corrupt_graph_file_in_a_non_utf8_folder(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("cli")
    folder = dataset(root / os.fsdecode(b"donn\xe9es"))  # a Latin-1 folder name: not valid UTF-8
    (folder / "scene_graphs.json").write_bytes(content)
    runs = root / "runs"
    expect_cli_error("sgr: train --data corrupt graphs (non-UTF-8 folder)", [*TRAIN, "--data", folder, "--out", runs],
                     "scene_graphs.json", run_root=runs)


def test_train_cli_on_a_full_disk_leaves_no_run(tmp_path, monkeypatch):
    """The first checkpoint cannot be written (ENOSPC): exit 2 naming it, and the new run folder is removed."""
    import lowlabel.files

    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst).name.startswith("step_"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(lowlabel.files.os, "replace", full_disk)
    folder = dataset(tmp_path / "mine")
    runs = tmp_path / "runs"
    text = expect_cli_error("sgr: train on a full disk", [*TRAIN, "--data", folder, "--out", runs], "step_",
                            run_root=runs)
    assert "No space left" in text and not runs.exists()


@pytest.mark.parametrize("target", ["model.pt", "retrieval.png", "summary.json"])
def test_failing_final_writes_are_clear_and_leave_no_temporary(tmp_path, monkeypatch, target):
    import lowlabel.files
    from lowlabel.engine import runtime as rt
    from lowlabel.engine.recipe import TrainConfig
    from lowlabel.methods.sg_retrieval import recipe

    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst).name == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(lowlabel.files.os, "replace", full_disk)
    cfg = recipe.Config(model=recipe.ModelConfig(hidden=8),
                        data=recipe.DataConfig(sentence_encoder="tfidf", label_embedder="random:8", batch_size=4),
                        train=TrainConfig(max_steps=2, checkpoint_every=2))
    run = tmp_path / "run"
    expect_clear_error(f"sgr: failing write of {target}", lambda: recipe.train(
        cfg, data=dataset(tmp_path / "mine"), run_dir=run, runtime=rt.init("cpu"), resume=False), target)
    assert not [p for p in run.rglob("*") if ".tmp" in p.name] and not (run / target).exists()
