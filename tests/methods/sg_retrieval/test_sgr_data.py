"""Graph construction, readers of the official formats and the official-folder source (on files written here), errors,
batching and pair sampling."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from lowlabel.engine import runtime as rt
from lowlabel.errors import LowlabelError
from lowlabel.methods.sg_retrieval.data import (
    PairBatches,
    caption_arrays,
    read_captions,
    read_graph_pickle,
    read_vg_scene_graphs,
)
from lowlabel.methods.sg_retrieval.graphs import PackedGraphs, build_graph, clean_label, from_adjacency
from lowlabel.methods.sg_retrieval.sources import official_data

VG = [
    {
        "image_id": 11,
        "objects": [
            {"object_id": 100, "names": ["Man"], "attributes": ["tall", "smiling"]},
            {"object_id": 101, "names": ["horse"]},
        ],
        "relationships": [{"relationship_id": 7, "predicate": "RIDING", "subject_id": 100, "object_id": 101}],
    },
    {
        "image_id": 12,
        "objects": [{"object_id": 5, "names": ["tree-top"], "attributes": []}, {"object_id": 6, "names": ["sky"]}],
        "relationships": [{"relationship_id": 1, "predicate": "under", "subject": {"object_id": 6},
                           "object": {"object_id": 5}}],
    },
]


def test_build_graph_node_order_and_symmetric_adjacency():
    g = build_graph("7", ["man", "horse"], [["tall"], ["brown", "big"]], [(0, "riding", 1), (1, "near", 0)])
    assert g.node_labels == ["man", "horse", "tall", "brown", "big", "riding", "near"]
    # directed: attr->object (2->0, 3->1, 4->1), subject->pred->object (0->5->1, 1->6->0)
    assert sorted(map(tuple, g.edges.tolist())) == sorted([(2, 0), (3, 1), (4, 1), (0, 5), (5, 1), (1, 6), (6, 0)])
    adj = g.adjacency()
    expected = np.zeros((7, 7), dtype=np.uint8)
    for a, b in [(2, 0), (3, 1), (4, 1), (0, 5), (5, 1), (1, 6), (6, 0)]:
        expected[a, b] = expected[b, a] = 1
    np.testing.assert_array_equal(adj, expected)
    assert clean_label("Tree-Top!!  left_of") == "tree top left of"


def test_malformed_graphs_name_the_record(tmp_path):
    with pytest.raises(LowlabelError, match="image 9 has no object"):
        build_graph("9", [], [], [])
    with pytest.raises(LowlabelError, match=r"image 9: relation 0 \('on'\) links objects 0 -> 3"):
        build_graph("9", ["a", "b"], [[], []], [(0, "on", 3)])
    dangling = {"relationship_id": 44, "predicate": "on", "subject_id": 100, "object_id": 999}
    bad = [{**VG[0], "relationships": [dangling]}]
    with pytest.raises(LowlabelError, match=r"image 11, relationship 44.*object id 999"):
        read_vg_scene_graphs(_write(tmp_path, bad))


def _write(folder, obj, name="g.json"):
    path = folder / name
    path.write_text(json.dumps(obj))
    return path


def test_read_vg_scene_graphs(tmp_path):
    graphs = read_vg_scene_graphs(_write(tmp_path, VG))
    assert [g.image_id for g in graphs] == ["11", "12"]
    assert graphs[0].node_labels == ["man", "horse", "tall", "smiling", "riding"]
    assert sorted(map(tuple, graphs[0].edges.tolist())) == [(0, 4), (2, 0), (3, 0), (4, 1)]
    assert graphs[1].node_labels == ["tree top", "sky", "under"]
    assert sorted(map(tuple, graphs[1].edges.tolist())) == [(1, 2), (2, 0)]


def test_read_graph_pickle_official_layout(tmp_path):
    adj = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=np.uint8)
    records = [
        {"node_labels": ["dog", "frisbee", "brown"], "adj": adj, "imgid": 3, "obj_labels": ["dog", "frisbee"],
         "num_objs": 2, "num_rels": 0},
        {"node_labels": ["cat"], "adj": np.zeros((1, 1), np.uint8), "cocoid": 8, "bboxes": np.zeros((1, 4))},
    ]
    path = tmp_path / "graphs.pkl"
    path.write_bytes(pickle.dumps(records))
    graphs = read_graph_pickle(path)
    assert [g.image_id for g in graphs] == ["3", "8"]
    np.testing.assert_array_equal(graphs[0].adjacency(), np.maximum(adj, adj.T))
    path.write_bytes(pickle.dumps([{"node_labels": ["a", "b"], "adj": np.zeros((3, 3)), "imgid": 5}]))
    with pytest.raises(LowlabelError, match="image 5: adj is"):
        read_graph_pickle(path)
    path.write_bytes(pickle.dumps([torch.nn.Linear]))  # arbitrary classes are refused, not executed
    with pytest.raises(LowlabelError, match="refusing"):
        read_graph_pickle(path)


def test_read_captions_coco_and_karpathy(tmp_path):
    coco = {"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "a dog"}, {"image_id": 2, "caption": "x"},
                                                   {"image_id": 1, "caption": "a brown dog"}]}
    assert read_captions(_write(tmp_path, coco, "c.json")) == {"1": ["a dog", "a brown dog"], "2": ["x"]}
    sentences = [{"raw": "A cat."}, {"raw": "cat"}]
    karpathy = {"images": [{"imgid": 0, "cocoid": 42, "split": "test", "sentences": sentences},
                           {"imgid": 1, "split": "train", "sentences": [{"raw": "sky"}]}]}
    caps = read_captions(_write(tmp_path, karpathy, "k.json"))
    assert caps == {"42": ["A cat.", "cat"], "1": ["sky"]}
    texts, owner = caption_arrays(caps, ["1", "42"])
    assert texts == ["sky", "A cat.", "cat"] and owner.tolist() == [0, 1, 1]
    with pytest.raises(LowlabelError, match="image 7 has a scene graph but no caption"):
        caption_arrays(caps, ["7"])


def test_packed_batch_equals_each_graph(tmp_path):
    from torch_geometric.utils import to_dense_adj

    selfloop = from_adjacency("z", ["dog", "sky"], np.array([[1, 1], [1, 0]]))  # a self-loop and a two-way edge
    graphs = [*read_vg_scene_graphs(_write(tmp_path, VG)), selfloop]
    packed = PackedGraphs(graphs, vocab=["man", "horse", "sky", "dog"])  # other labels are unknown -> zero row
    table = torch.arange(5 * 2, dtype=torch.float32).reshape(5, 2)
    table[-1] = 0
    table_out, edge_index, batch, num_graphs, labels = packed.batch(torch.tensor([2, 0, 1]), table)
    x = table_out[labels]
    assert num_graphs == 3 and x.shape == (2 + 5 + 3, 2) and batch.tolist() == [0] * 2 + [1] * 5 + [2] * 3
    assert len(edge_index.T.unique(dim=0)) == edge_index.shape[1]  # each directed edge once
    dense = to_dense_adj(edge_index, batch)
    first = 0
    for row, g in zip(range(3), [graphs[2], graphs[0], graphs[1]], strict=True):
        n = len(g.node_labels)
        np.testing.assert_array_equal(dense[row, :n, :n].numpy(), g.adjacency())
        vocab_rows = [["man", "horse", "sky", "dog"].index(w) if w in ("man", "horse", "sky", "dog") else 4
                      for w in g.node_labels]
        torch.testing.assert_close(x[first : first + n], table[vocab_rows])
        first += n
    assert x[2].tolist() == table[0].tolist() and x[4].abs().sum() == 0  # 'tall' is not in the vocab


def test_pair_sampler_half_from_top_range():
    runtime = rt.init("cpu", seed=0)
    n = 400
    graphs = PackedGraphs([build_graph(str(i), ["a"], [[]], []) for i in range(n)])
    rel = torch.rand(n, n, generator=torch.Generator().manual_seed(0))
    rel = (rel + rel.T) / 2
    batches = PairBatches(graphs, torch.zeros(2, 3), rel, 50, runtime, tail_range=10, seed=3)
    anchors = torch.arange(n).repeat(20)
    partners = batches.partners(anchors, torch.Generator().manual_seed(0))
    assert not bool((partners == anchors).any())
    masked = rel.clone().fill_diagonal_(-1)
    in_top = (masked[anchors].argsort(1, descending=True)[:, :10] == partners[:, None]).any(1).float().mean()
    # P(in top-10) = 0.5 + 0.5 * 10/399 ~= 0.5125; 8000 draws give a standard error of ~0.0056
    assert abs(float(in_top) - (0.5 + 0.5 * 10 / 399)) < 0.03
    graphs_batch, target = next(iter(batches.epoch(0)))
    assert graphs_batch.num_graphs == 100 and target.shape == (50,)
    again = next(iter(batches.epoch(0)))
    torch.testing.assert_close(target, again[1])  # the order depends on (seed, epoch) only


def test_official_folder_with_precomputed_relevance_and_split(tmp_path):
    """*_sbert_mean.npy rows are in sorted-id order (spec); the graphs' own order selects rows and columns."""
    records = [VG[1], {**VG[0], "image_id": 10}, VG[0]]  # ids 12, 10, 11
    (tmp_path / "scene_graphs.json").write_text(json.dumps(records))
    rel = np.array([[1.0, 0.2, 0.3], [0.2, 0.9, 0.4], [0.3, 0.4, 0.8]], dtype=np.float32)  # ids 10, 11, 12
    np.save(tmp_path / "vg_sbert_mean.npy", rel)
    np.save(tmp_path / "vg_sbert_img_id.npy", np.array([10, 11, 12]))
    data = official_data(tmp_path)
    assert [g.image_id for g in data.graphs] == ["12", "10", "11"] and data.encoder == "precomputed:vg_sbert_mean.npy"
    torch.testing.assert_close(data.relevance, torch.tensor([[0.8, 0.3, 0.4], [0.3, 1.0, 0.2], [0.4, 0.2, 0.9]]))
    assert data.train.tolist() == [0, 1] and data.test.tolist() == [2]  # no split.json: the last 20% (at least 1)
    (tmp_path / "split.json").write_text(json.dumps({"10": "train", "11": "train", "12": "test"}))
    data = official_data(tmp_path)
    assert data.train.tolist() == [1, 2] and data.test.tolist() == [0]
    (tmp_path / "split.json").write_text(json.dumps({"11": "train", "12": "test"}))
    with pytest.raises(LowlabelError, match="leaves 1 train / 1 test"):
        official_data(tmp_path)


def test_official_folder_errors_name_what_is_missing(tmp_path):
    with pytest.raises(LowlabelError, match=r"neither a folder nor a \.yaml/\.json manifest"):
        official_data(tmp_path / "nope")
    with pytest.raises(LowlabelError, match=r"no scene_graphs\.json and no"):
        official_data(tmp_path)
    (tmp_path / "scene_graphs.json").write_text(json.dumps(VG))
    with pytest.raises(LowlabelError, match="no captions and no relevance matrix"):
        official_data(tmp_path)
    np.save(tmp_path / "vg_sbert_mean.npy", np.eye(1, dtype=np.float32))
    np.save(tmp_path / "vg_sbert_img_id.npy", np.array([11]))
    with pytest.raises(LowlabelError, match="has no row for images 12"):
        official_data(tmp_path)


def test_read_resnet_features_official_hdf5(tmp_path):
    import h5py

    from lowlabel.methods.sg_retrieval.data import read_resnet_features

    features = np.arange(12, dtype=np.float32).reshape(3, 4)
    with h5py.File(tmp_path / "resnet152.h5", "w") as fh:  # as preprocess/extract_resnet_feature.py writes it
        fh.create_dataset("resnet_feature", data=features)
        fh.create_dataset("id", data=[2407, 11, 35])
    got, ids = read_resnet_features(tmp_path / "resnet152.h5")
    assert ids == ["2407", "11", "35"] and got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), features)
    with h5py.File(tmp_path / "bad.h5", "w") as fh:
        fh.create_dataset("resnet_feature", data=np.array([[1.0, np.nan]]))
        fh.create_dataset("id", data=[1])
    with pytest.raises(LowlabelError, match=r"bad\.h5: resnet_feature holds NaN"):
        read_resnet_features(tmp_path / "bad.h5")


def test_read_human_ratings_counts_votes_per_triplet(tmp_path):
    from lowlabel.methods.sg_retrieval.data import read_human_ratings

    (tmp_path / "t.csv").write_text("triplet_id,query_id,target_id1,target_id2\n7,1,2,3\n9,1,3,4\n5,2,1,4\n")
    (tmp_path / "a.csv").write_text("user_id,answer,triplet_id\nuser_0,0,7\nuser_1,0,7\nuser_2,1,7\nuser_0,2,7\n"
                                    "user_1,3,9\nuser_2,3,9\n")
    triples, votes = read_human_ratings(tmp_path / "t.csv", tmp_path / "a.csv")
    assert triples == [("1", "2", "3"), ("1", "3", "4"), ("2", "1", "4")]
    # columns o1, o2, both, neither, worked out by hand from the answers above
    assert votes.tolist() == [[2, 1, 1, 0], [0, 0, 0, 2], [0, 0, 0, 0]]
    (tmp_path / "a.csv").write_text("user_id,answer,triplet_id\nuser_0,4,7\n")
    with pytest.raises(LowlabelError, match=r"a\.csv line 2: answer '4'"):
        read_human_ratings(tmp_path / "t.csv", tmp_path / "a.csv")
    (tmp_path / "a.csv").write_text("user_id,answer,triplet_id\nuser_0,1,8\n")
    with pytest.raises(LowlabelError, match=r"a\.csv line 2: triplet 8 is not in"):
        read_human_ratings(tmp_path / "t.csv", tmp_path / "a.csv")


def test_manifest_names_files_of_any_name(tmp_path):
    """A manifest lets a dataset keep its own file names; paths are relative to the manifest."""
    (tmp_path / "my").mkdir()
    (tmp_path / "my" / "graphs of mine.json").write_text(json.dumps([*VG, {**VG[0], "image_id": 10}]))
    rel = np.array([[1.0, 0.5, 0.1], [0.5, 0.9, 0.2], [0.1, 0.2, 0.8]], dtype=np.float32)  # ids 12, 11, 10
    np.save(tmp_path / "my" / "rel.npy", rel)
    np.save(tmp_path / "my" / "rel_ids.npy", np.array([12, 11, 10]))
    (tmp_path / "my" / "halves.json").write_text(json.dumps({"11": "train", "12": "test"}))
    manifest = tmp_path / "my" / "set.yaml"
    manifest.write_text("graphs: graphs of mine.json\nrelevance: rel.npy\nrelevance_ids: rel_ids.npy\n"
                        "split: halves.json\n")
    with pytest.raises(LowlabelError, match="leaves 1 train / 1 test"):  # the manifest's split file was read
        official_data(manifest)
    manifest.write_text("graphs: graphs of mine.json\nrelevance: rel.npy\nrelevance_ids: rel_ids.npy\n")
    data = official_data(manifest)
    assert [g.image_id for g in data.graphs] == ["11", "12", "10"] and data.encoder == "precomputed:rel.npy"
    torch.testing.assert_close(data.relevance, torch.tensor([[0.9, 0.5, 0.2], [0.5, 1.0, 0.1], [0.2, 0.1, 0.8]]))
    manifest.write_text("graphs: graphs of mine.json\ncaptoins: c.json\n")
    with pytest.raises(LowlabelError, match="unknown keys captoins"):
        official_data(manifest)
    manifest.write_text("graphs: missing.json\n")
    with pytest.raises(LowlabelError, match=r"graphs file .*missing\.json does not exist"):
        official_data(manifest)
