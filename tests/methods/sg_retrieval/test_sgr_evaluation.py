"""Retrieval metrics of the test split against brute-force loops: whole-database nDCG (all queries unless limited,
never a cut database), first-stage pools, and human triplet agreement with the official -inf / fallback rules."""

from __future__ import annotations

import math

import pytest
import torch

from lowlabel.methods.sg_retrieval.evaluation import human_agreement, ranking_metrics


def _ndcg(scores: list[float], gains: list[float], k: int) -> float:
    """IRSGS nDCG@k of one ranked list, by the book: d_1 = d_2 = 1, d_j = log2 j; relevance clamped at 0."""
    gains = [max(g, 0.0) for g in gains]
    disc = [1.0 if j < 2 else math.log2(j) for j in range(1, k + 1)]
    by_score = [g for _, g in sorted(zip(scores, gains, strict=True), key=lambda t: -t[0])][:k]
    ideal = sorted(gains, reverse=True)[:k]
    idcg = sum(g / d for g, d in zip(ideal, disc, strict=False))
    return 0.0 if idcg == 0 else sum(g / d for g, d in zip(by_score, disc, strict=False)) / idcg


def _data(n: int = 9, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen, dtype=torch.float64), dim=1)
    truth = torch.rand(n, n, generator=gen, dtype=torch.float64) - 0.2  # some negative relevance: clamped
    features = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    return z, truth, features


@pytest.mark.parametrize("queries", [0, 3])
def test_whole_database_ndcg_against_a_loop(queries):
    z, truth, _ = _data()
    n = z.shape[0]
    got = ranking_metrics(z, truth, queries=queries, chunk=2)  # chunks of 2 queries: the sums must not depend on it
    rows = range(n if queries == 0 else queries)
    for k in (5, 10):
        expected = sum(_ndcg([float(z[q] @ z[c]) for c in range(n) if c != q],
                             [float(truth[q, c]) for c in range(n) if c != q], k) for q in rows) / len(rows)
        assert got[f"ndcg@{k}"] == pytest.approx(expected, abs=1e-9)
    assert set(got) == {"ndcg@5", "ndcg@10", "ndcg@20"}


def test_first_stage_pool_ndcg_against_a_loop():
    z, truth, features = _data()
    n, pool = z.shape[0], 3
    got = ranking_metrics(z, truth, first_stage=features, pool_size=pool)
    unit = torch.nn.functional.normalize(features, dim=1)
    total = 0.0
    for q in range(n):
        first = sorted((c for c in range(n) if c != q), key=lambda c: -float(unit[q] @ unit[c]))[:pool]
        total += _ndcg([float(z[q] @ z[c]) for c in first], [float(truth[q, c]) for c in first], 5)
    assert got["pool_ndcg@5"] == pytest.approx(total / n, abs=1e-9)


def test_human_agreement_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])  # item 1 is closer to 0 than item 2 is
    triplets = torch.tensor([[0, 1, 2], [0, 2, 3]])
    votes = torch.tensor([[3, 1, 0, 0], [1, 1, 2, 0]])
    # triplet 0: the model picks target 1 (0.8 > 0): 3/4; triplet 1: picks target 1 (0 > -1): (1 + 0.5*2)/4
    assert human_agreement(z, triplets, votes) == pytest.approx((3 / 4 + 2 / 4) / 2)
    # first stage: item 2 is the nearest to item 0, item 3 next; a pool of 1 holds item 2 only, so in triplet 0
    # target 1 scores -inf (the model now picks target 2: 1/4) and in triplet 1 target 2 scores -inf (1 + 1)/4
    features = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.1], [0.5, 0.5]])
    assert human_agreement(z, triplets, votes, features, pool_size=1) == pytest.approx((1 / 4 + 2 / 4) / 2)
    # both targets outside the pool: the first-stage cosines decide (item 3 beats item 1 for query 0)
    outside = torch.tensor([[0, 1, 3]])
    assert human_agreement(z, outside, torch.tensor([[3, 1, 0, 0]]), features, pool_size=1) == pytest.approx(1 / 4)


def test_evaluate_ranks_the_whole_test_split(tmp_path):
    """`recipe.evaluate` on a user folder: every test image is a query against every other test image (the old code
    cut both to the first 1,000); `data.eval_queries` limits the queries only."""
    import json

    import numpy as np

    from lowlabel.engine import runtime as rt
    from lowlabel.methods.sg_retrieval import recipe
    from lowlabel.methods.sg_retrieval.data import read_vg_scene_graphs
    from lowlabel.methods.sg_retrieval.index import ModelSpec, embed_records, export_model, load_model

    names = ["man", "dog", "cat", "horse", "hat", "ball", "tree"]
    records = [{"image_id": 100 + i, "objects": [{"object_id": 1, "names": [names[i % 7]]},
                                                 {"object_id": 2, "names": [names[(i * 3 + 1) % 7]]}],
                "relationships": [{"predicate": "near", "subject_id": 1, "object_id": 2}] if i % 2 else []}
               for i in range(16)]
    (tmp_path / "scene_graphs.json").write_text(json.dumps(records))
    truth = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    np.save(tmp_path / "x_sbert_mean.npy", truth)
    np.save(tmp_path / "x_sbert_img_id.npy", np.arange(100, 116))
    (tmp_path / "split.json").write_text(json.dumps({str(100 + i): "train" if i < 5 else "test" for i in range(16)}))
    spec = ModelSpec(8, 8, 2, "gcn", 8, False, "random:8")
    torch.manual_seed(0)
    export_model(spec.build(), spec, tmp_path / "model.pt")
    model, _ = load_model(tmp_path / "model.pt")
    z = embed_records(model, spec, read_vg_scene_graphs(tmp_path / "scene_graphs.json")[5:]).double()
    test = list(range(5, 16))
    cfg = recipe.Config()
    assert cfg.data.eval_queries == 0  # default: every test image is a query
    for queries in (0, 4):
        cfg.data.eval_queries = queries
        got = recipe.evaluate(cfg, checkpoint=tmp_path / "model.pt", data=tmp_path, runtime=rt.init("cpu"))
        rows = range(len(test) if queries == 0 else queries)
        expected = sum(_ndcg([float(z[q] @ z[c]) for c in range(len(test)) if c != q],
                             [float(truth[test[q], test[c]]) for c in range(len(test)) if c != q], 10)
                       for q in rows) / len(rows)
        assert got["ndcg@10"] == pytest.approx(expected, abs=1e-5)
