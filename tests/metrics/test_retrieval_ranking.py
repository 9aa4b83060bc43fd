"""ranking_metrics and retrieval_metrics against hand-worked lists and brute-force loops over full argsorts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.metrics.retrieval import ranking_metrics, retrieval_metrics


def brute_row(rel: list[int], ks: tuple[int, ...] = (2, 4)) -> dict[str, float]:
    """One ranked 0/1 list, with loops; ASI as [H] writes it: multiset intersection with the ideal list."""
    n_rel = sum(rel)
    ideal = sorted(rel, reverse=True)
    out = {"p_at_1": float(rel[0])}
    for k in ks:
        out[f"r_at_{k}"] = float(any(rel[:k]))
    if n_rel == 0:
        return {**out, "ap": float("nan"), "map_at_r": float("nan"), "asi": float("nan")}
    ap = map_r = asi = 0.0
    for k in range(1, len(rel) + 1):
        p_at_k = sum(rel[:k]) / k
        if rel[k - 1]:
            ap += p_at_k
            if k <= n_rel:
                map_r += p_at_k
        if k <= n_rel:
            asi += sum((Counter(rel[:k]) & Counter(ideal[:k])).values()) / k
    return {**out, "ap": ap / n_rel, "map_at_r": map_r / n_rel, "asi": asi / n_rel}


def test_hand_worked_list_where_asi_and_map_at_r_differ() -> None:
    got = ranking_metrics(torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]]))
    # row 0: R=2, P@1=1, P@2=1/2, P@3=2/3: ASI=(1+1/2)/2, mAP@R=(1)/2, AP=(1+2/3)/2
    assert got["asi"][0].item() == pytest.approx(0.75)
    assert got["map_at_r"][0].item() == pytest.approx(0.5)
    assert got["ap"][0].item() == pytest.approx(5 / 6)
    # row 1: P@1=0, P@2=1/2, P@3=2/3: ASI=(0+1/2)/2, mAP@R=(1/2)/2, AP=(1/2+2/3)/2
    assert got["asi"][1].item() == pytest.approx(0.25)
    assert got["map_at_r"][1].item() == pytest.approx(0.25)
    assert got["ap"][1].item() == pytest.approx(7 / 12)
    assert got["p_at_1"].tolist() == [1, 0, 0]
    assert got["r_at_2"].tolist() == [1, 1, 0] and got["r_at_4"].tolist() == [1, 1, 1]
    assert got["ap"][2].item() == pytest.approx(0.25) and got["asi"][2].item() == 0


@pytest.mark.parametrize(("q", "length", "p"), [(1, 1, 0.5), (9, 3, 0.5), (40, 25, 0.2), (30, 60, 0.6)])
def test_ranking_metrics_match_loops(q: int, length: int, p: float) -> None:
    rng = np.random.default_rng(q + length)
    rel = (rng.random((q, length)) < p).astype(np.int64)
    got = ranking_metrics(torch.from_numpy(rel).bool())
    assert set(got) == {"asi", "ap", "map_at_r", "p_at_1", "r_at_2", "r_at_4"}
    for i in range(q):
        want = brute_row(rel[i].tolist())
        for key, value in want.items():
            assert got[key].shape == (q,)
            if np.isnan(value):
                assert torch.isnan(got[key][i]), key
            else:
                assert got[key][i].item() == pytest.approx(value, abs=1e-12), key


def test_ranking_metrics_reject_bad_input() -> None:
    with pytest.raises(LowlabelError, match="only 0 and 1"):
        ranking_metrics(torch.tensor([[0.0, 2.0]]))
    with pytest.raises(LowlabelError, match="queries, ranks"):
        ranking_metrics(torch.tensor([1, 0]))


def brute_retrieval(gallery: np.ndarray, g_labels: np.ndarray, queries: np.ndarray, q_labels: np.ndarray,
                    own_rows: list[int | None], ks: tuple[int, ...]) -> dict[str, float]:
    """Full stable argsort per query in float64 with the own row deleted, then `brute_row` and means."""
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sums, count = Counter(), 0
    for i in range(len(q)):
        order = np.argsort(-(g @ q[i]), kind="stable")
        if own_rows[i] is not None:
            order = order[order != own_rows[i]]
        rel = (g_labels[order] == q_labels[i]).astype(int).tolist()
        if sum(rel) == 0:
            continue
        row = brute_row(rel, ks)
        count += 1
        for key in ("ap", "asi", *(f"r_at_{k}" for k in ks)):
            sums[key] += row[key]
    return {"map": sums["ap"] / count, "asi": sums["asi"] / count, **{f"r_at_{k}": sums[f"r_at_{k}"] / count
                                                                     for k in ks}}


def _data(n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, classes, n)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize(("n", "d", "classes", "chunk"), [(2, 3, 1, 1 << 22), (30, 4, 3, 40), (120, 8, 9, 500)])
def test_leave_one_out_matches_brute_force(backend: str, n: int, d: int, classes: int, chunk: int) -> None:
    emb, labels = _data(n, d, classes, n)
    want = brute_retrieval(emb, labels, emb, labels, list(range(n)), (1, 10, 20))
    got = retrieval_metrics(torch.from_numpy(emb), torch.from_numpy(labels), backend=backend, chunk_elements=chunk)
    assert set(got) == {"map", "asi", "r_at_1", "r_at_10", "r_at_20"}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_query_subset_and_separate_query_set(backend: str) -> None:
    emb, labels = _data(80, 6, 5, 7)
    rows = [3, 10, 11, 50, 79]
    want = brute_retrieval(emb, labels, emb[rows], labels[rows], rows, (1, 3))
    got = retrieval_metrics(torch.from_numpy(emb), torch.from_numpy(labels), torch.tensor(rows), ks=(1, 3),
                            backend=backend)
    assert got == pytest.approx(want, abs=1e-9)
    queries, q_labels = _data(25, 6, 6, 8)  # label 5 has no gallery item: those queries are skipped
    want = brute_retrieval(emb, labels, queries, q_labels, [None] * 25, (1, 10, 20))
    got = retrieval_metrics(torch.from_numpy(emb), torch.from_numpy(labels), query_emb=torch.from_numpy(queries),
                            query_labels=torch.from_numpy(q_labels), backend=backend, chunk_elements=100)
    assert got == pytest.approx(want, abs=1e-9)
    # a separate query set with the gallery row to leave out for each query
    leave = [int(i) for i in np.random.default_rng(0).integers(0, 80, 25)]
    want = brute_retrieval(emb, labels, queries, q_labels, leave, (1, 10, 20))
    got = retrieval_metrics(torch.from_numpy(emb), torch.from_numpy(labels), torch.tensor(leave),
                            torch.from_numpy(queries), torch.from_numpy(q_labels), backend=backend)
    assert got == pytest.approx(want, abs=1e-9)


def test_ties_keep_gallery_order_and_length_does_not_matter() -> None:
    emb = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 0, 1])
    # query row 0: rows 1, 2, 4 tie at cosine 1 and come in gallery order (relevant, not, not), then row 3 (relevant)
    got = retrieval_metrics(emb, labels, torch.tensor([0]), ks=(1, 2))
    assert got == pytest.approx({"map": (1 + 2 / 4) / 2, "asi": (1 + 1 / 2) / 2, "r_at_1": 1.0, "r_at_2": 1.0})
    # reversed gallery: the tied rows now come as (not, not, relevant): a different, still stable, result
    flipped = retrieval_metrics(emb.flip(0), labels.flip(0), torch.tensor([4]), ks=(1, 2))
    assert flipped == pytest.approx({"map": (1 / 3 + 2 / 4) / 2, "asi": 0.0, "r_at_1": 0.0, "r_at_2": 0.0})


def test_retrieval_metrics_errors() -> None:
    emb, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 4, 5])
    with pytest.raises(LowlabelError, match="no query has a relevant"):
        retrieval_metrics(emb, labels)
    with pytest.raises(LowlabelError, match="6 rows"):
        retrieval_metrics(emb, labels[:5])
    with pytest.raises(LowlabelError, match="outside the gallery"):
        retrieval_metrics(emb, labels, torch.tensor([6]))
    with pytest.raises(LowlabelError, match="without query_labels"):
        retrieval_metrics(emb, labels, query_emb=emb)
    with pytest.raises(LowlabelError, match="NaN"):
        retrieval_metrics(torch.full((6, 3), float("nan")), labels)
    with pytest.raises(LowlabelError, match="backend"):
        retrieval_metrics(emb, labels, backend="annoy")
