"""`lowlabel sgr index|query` end to end on files written here (a GloVe text file supplies the node features)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lowlabel.methods.sg_retrieval.cli import app
from lowlabel.methods.sg_retrieval.data import read_vg_scene_graphs
from lowlabel.methods.sg_retrieval.index import GraphIndex, ModelSpec, embed_records, export_model, load_model

WORDS = ["man", "woman", "horse", "dog", "hat", "tall", "brown", "riding", "wearing", "on"]


def _record(i: int, subject: str, obj: str, pred: str, attr: str) -> dict:
    return {
        "image_id": 1000 + i,
        "objects": [{"object_id": 1, "names": [subject], "attributes": [attr]}, {"object_id": 2, "names": [obj]}],
        "relationships": [{"relationship_id": 1, "predicate": pred, "subject_id": 1, "object_id": 2}],
    }


def _setup(tmp_path):
    rng = np.random.default_rng(0)
    glove = tmp_path / "glove.txt"
    glove.write_text("".join(f"{w} " + " ".join(f"{v:.5f}" for v in rng.standard_normal(8)) + "\n" for w in WORDS))
    records = [
        _record(i, s, o, p, a)
        for i, (s, o, p, a) in enumerate(
            [("man", "horse", "riding", "tall"), ("woman", "hat", "wearing", "brown"), ("dog", "hat", "on", "brown"),
             ("man", "dog", "riding", "tall"), ("woman", "horse", "on", "tall"), ("dog", "horse", "wearing", "brown")]
        )
    ]
    graphs = tmp_path / "scene_graphs.json"
    graphs.write_text(json.dumps(records))
    torch.manual_seed(0)
    spec = ModelSpec(8, 16, 3, "gcn", 32, False, f"glove:{glove}")
    model = spec.build()
    for p in model.parameters():  # non-trivial weights, as after training
        torch.nn.init.normal_(p, std=0.3)
    export_model(model, spec, tmp_path / "model.pt")
    return graphs, records


def test_index_then_query_by_id_graph_and_candidates(tmp_path):
    graphs, records = _setup(tmp_path)
    ix = tmp_path / "ix"
    runner = CliRunner()
    res = runner.invoke(app, ["index", str(graphs), "--model", str(tmp_path / "model.pt"), "--out", str(ix)])
    assert res.exit_code == 0, res.output
    model, spec = load_model(tmp_path / "model.pt")
    z = embed_records(model, spec, read_vg_scene_graphs(graphs))
    ids = [str(r["image_id"]) for r in records]
    scores = (z @ z.T).numpy()

    res = runner.invoke(app, ["query", str(tmp_path / "ix"), "--image-id", "1000", "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)
    brute = [ids[j] for j in np.argsort(-scores[0]) if j != 0][:3]
    assert [h["image_id"] for h in hits] == brute
    np.testing.assert_allclose([h["score"] for h in hits], sorted(scores[0, 1:], reverse=True)[:3], atol=1e-5)

    one = tmp_path / "q.json"
    one.write_text(json.dumps(records[3]))  # the same graph as an indexed image: it comes first with score 1
    res = runner.invoke(app, ["query", str(tmp_path / "ix"), "--graph", str(one), "-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)
    assert hits[0]["image_id"] == "1003" and abs(hits[0]["score"] - 1.0) < 1e-5

    cands = tmp_path / "cands.txt"
    cands.write_text("1005\n1002\n1004\n")
    res = runner.invoke(app, ["query", str(ix), "--image-id", "1000", "--candidates", str(cands), "--json"])
    order = [h["image_id"] for h in json.loads(res.output)]
    assert order == sorted(["1005", "1002", "1004"], key=lambda c: -scores[0, ids.index(c)])


def test_query_errors_are_user_errors(tmp_path):
    graphs, _ = _setup(tmp_path)
    runner = CliRunner()
    runner.invoke(app, ["index", str(graphs), "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "ix")])
    res = runner.invoke(app, ["query", str(tmp_path / "ix"), "--image-id", "nope"])
    assert res.exit_code != 0 and "not in the index" in str(res.exception)
    res = runner.invoke(app, ["query", str(tmp_path / "ix")])
    assert "exactly one of --graph" in str(res.exception)
    assert len(GraphIndex(tmp_path / "ix").ids) == 6


def test_exported_model_errors(tmp_path):
    from dataclasses import asdict

    from lowlabel.engine.checkpoint import atomic_save
    from lowlabel.errors import LowlabelError

    spec = ModelSpec(8, 16, 2, "gcn", 32, False, "random:8")
    state = spec.build().state_dict()
    atomic_save({"spec": asdict(spec), "state_dict": state}, tmp_path / "old.pt")
    with pytest.raises(LowlabelError, match="older 'state_dict' layout"):
        load_model(tmp_path / "old.pt")
    atomic_save({"spec": {**asdict(spec), "hidden": 12}, "model": state}, tmp_path / "wrong.pt")
    with pytest.raises(LowlabelError, match="does not fit this model"):
        load_model(tmp_path / "wrong.pt")
