"""Retrieval metrics, batched over queries: graded nDCG@k, human-triplet agreement, recall@k and mAP.

All functions take score matrices (Q, C): row q holds the scores of query q's C candidates (higher = retrieved
earlier). Ranking uses `torch.topk` / a stable descending sort; ties between equal scores keep candidate order.
"""

from __future__ import annotations

import math

import torch

from lowlabel.errors import LowlabelError

DISCOUNTS = ("irsgs", "standard")


def _check_pair(scores: torch.Tensor, other: torch.Tensor, name: str) -> None:
    if scores.dim() != 2 or other.shape != scores.shape:
        raise LowlabelError(
            f"scores {tuple(scores.shape)} and {name} {tuple(other.shape)} must both be (queries, candidates)"
        )


def _discount(k: int, kind: str, device: torch.device) -> torch.Tensor:
    """(k,) divisors d_j for ranks j = 1..k."""
    ranks = torch.arange(1, k + 1, dtype=torch.float64, device=device)
    if kind == "irsgs":
        return torch.where(ranks < 2, torch.ones_like(ranks), torch.log2(ranks))
    return torch.log2(ranks + 1)


def ndcg_at_k(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    k: int,
    discount: str = "irsgs",
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-query nDCG@k (Q,) of graded relevance; take `.mean()` for the reported number.

    scores, relevance: (Q, C); valid: optional (Q, C) bool, False = not a candidate (excluded from both rankings).
    Relevance is clamped at 0 from below. DCG@k = sum_{j<=k} y_(j) / d_j over candidates sorted by score;
    IDCG@k is the same sorted by relevance; nDCG = DCG / IDCG, and 0 where IDCG = 0.
    discount="irsgs": d_1 = 1, d_j = log2(j) for j >= 2 (IRSGS `compute_ndcg.py`: ranks 1 and 2 undiscounted);
    discount="standard": d_j = log2(j + 1) (the textbook form, as sklearn.metrics.ndcg_score with ties broken by order).
    k larger than C is cut to C.
    """
    _check_pair(scores, relevance, "relevance")
    if discount not in DISCOUNTS:
        raise LowlabelError(f"discount='{discount}': use one of {', '.join(DISCOUNTS)}")
    if k < 1:
        raise LowlabelError(f"k={k}: nDCG@k needs k >= 1")
    gains = relevance.to(torch.float64).clamp_min(0)
    s = scores.to(torch.float64)
    if valid is not None:
        _check_pair(scores, valid, "valid")
        s = s.masked_fill(~valid, -math.inf)
        gains = gains.masked_fill(~valid, 0.0)
    k = min(k, scores.shape[1])
    d = _discount(k, discount, scores.device)
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
    dcg = (gains.gather(1, order) / d).sum(1)
    ideal = (torch.topk(gains, k, dim=1).values / d).sum(1)
    return torch.where(ideal > 0, dcg / ideal.clamp_min(1e-300), torch.zeros_like(dcg))


def triplet_agreement(
    sim1: torch.Tensor,
    sim2: torch.Tensor,
    votes: torch.Tensor,
    min_decisive: int = 2,
    fallback: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> float:
    """Mean agreement of an algorithm with people on (query, target1, target2) triplets (IRSGS human agreement).

    sim1, sim2: (T,) the algorithm's similarity of the query to target 1 and target 2 (-inf where a target is not in
    the algorithm's candidate list); votes: (T, 4) answer counts (o1 = target1 more relevant, o2 = target2, p = both,
    q = neither). The algorithm chooses target 1 iff sim1 > sim2 (ties choose target 2); where both sims are -inf
    the `fallback` (sim1, sim2) pair (IRSGS: ResNet similarities) decides. Per triplet
    s = (o_chosen + 0.5 p) / (o1 + o2 + p + q); triplets with o1 + o2 < `min_decisive` are skipped.
    """
    if sim1.shape != sim2.shape or sim1.dim() != 1 or votes.shape != (sim1.shape[0], 4):
        raise LowlabelError(
            f"triplet_agreement needs sim1, sim2 of shape (T,) and votes (T, 4); got {tuple(sim1.shape)}, "
            f"{tuple(sim2.shape)}, {tuple(votes.shape)}"
        )
    a, b = sim1.to(torch.float64), sim2.to(torch.float64)
    if fallback is not None:
        both_missing = torch.isneginf(a) & torch.isneginf(b)
        a = torch.where(both_missing, fallback[0].to(torch.float64), a)
        b = torch.where(both_missing, fallback[1].to(torch.float64), b)
    v = votes.to(torch.float64)
    o1, o2, p, q = v.unbind(1)
    keep = (o1 + o2) >= min_decisive
    if not bool(keep.any()):
        raise LowlabelError(f"no triplet has at least {min_decisive} decisive votes (o1 + o2); nothing to score")
    chosen = torch.where(a > b, o1, o2)
    score = (chosen + 0.5 * p) / (o1 + o2 + p + q)
    return float(score[keep].mean())


def recall_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Per-query hit rate (Q,): 1 if any of the top-k candidates is relevant (Recall@k of metric learning).

    scores: (Q, C); relevant: (Q, C) bool (e.g. same label; exclude the query itself with a -inf score).
    """
    _check_pair(scores, relevant, "relevant")
    if k < 1:
        raise LowlabelError(f"k={k}: recall@k needs k >= 1")
    top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return relevant.gather(1, top).any(1).to(torch.float64)


def average_precision(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Per-query average precision (Q,) over the full ranking; mean it for mAP.

    scores: (Q, C); relevant: (Q, C) bool. AP = (1/R) sum_j P@j * rel_j with R the number of relevant candidates;
    queries with no relevant candidate get NaN (drop them before averaging, or use `mean_average_precision`).
    Ties are broken by candidate order (sklearn's average_precision_score treats tied scores as one threshold).
    """
    _check_pair(scores, relevant, "relevant")
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    hits = relevant.gather(1, order).to(torch.float64)
    ranks = torch.arange(1, scores.shape[1] + 1, dtype=torch.float64, device=scores.device)
    precision = hits.cumsum(1) / ranks
    n_rel = hits.sum(1)
    return (precision * hits).sum(1) / n_rel  # NaN where n_rel = 0


def mean_average_precision(scores: torch.Tensor, relevant: torch.Tensor) -> float:
    """mAP over the queries that have at least one relevant candidate (see `average_precision`)."""
    ap = average_precision(scores, relevant)
    has = ~torch.isnan(ap)
    if not bool(has.any()):
        raise LowlabelError("no query has a relevant candidate; mAP is undefined")
    return float(ap[has].mean())
