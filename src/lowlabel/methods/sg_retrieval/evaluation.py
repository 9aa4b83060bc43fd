"""IRSGS evaluation protocol: re-rank each query's candidate pool, nDCG@k against a ground truth, and triplets."""

from __future__ import annotations

import torch

from lowlabel.metrics.retrieval import ndcg_at_k, triplet_agreement


def candidate_pool(first_stage: torch.Tensor, size: int = 100) -> torch.Tensor:
    """(Q, P) indices of each query's `size` best candidates under a first-stage similarity (Q, Q) over the same
    database as the queries (IRSGS: ResNet-152 cosine), the query itself excluded; P = min(size, Q - 1)."""
    s = first_stage.clone().float()
    s.fill_diagonal_(-float("inf"))
    return torch.topk(s, min(size, s.shape[1] - 1), dim=1).indices


def pool_ndcg(
    scores: torch.Tensor, truth: torch.Tensor, pool: torch.Tensor, ks: tuple[int, ...] = (5, 10, 20)
) -> dict[str, float]:
    """Mean nDCG@k (IRSGS discount) of re-ranking each query's pool by `scores`; scores, truth: (Q, C), pool (Q, P)."""
    s, y = scores.gather(1, pool), truth.gather(1, pool)
    return {f"ndcg@{k}": float(ndcg_at_k(s, y, k, "irsgs").mean()) for k in ks}


def full_ndcg(scores: torch.Tensor, truth: torch.Tensor, k: int = 10) -> float:
    """Mean nDCG@k of ranking the whole database (query excluded) by `scores`; (Q, Q) square inputs."""
    valid = ~torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    return float(ndcg_at_k(scores, truth, k, "irsgs", valid=valid).mean())


def make_triplets(
    truth: torch.Tensor, pool: torch.Tensor, per_query: int, min_gap: float, gen: torch.Generator
) -> torch.Tensor:
    """(T, 3) (query, target1, target2) with both targets in the query's pool and |truth gap| >= `min_gap`
    (the authors' triplet clean-up rule); up to `per_query` random pairs are tried per query."""
    Q, P = pool.shape
    q = torch.arange(Q).repeat_interleave(per_query)
    a = pool[q, torch.randint(P, (len(q),), generator=gen)]
    b = pool[q, torch.randint(P, (len(q),), generator=gen)]
    keep = (a != b) & ((truth[q, a] - truth[q, b]).abs() >= min_gap)
    return torch.stack([q[keep], a[keep], b[keep]], 1)


def panel_votes(
    truth: torch.Tensor, triplets: torch.Tensor, raters: int, noise: float, gen: torch.Generator
) -> torch.Tensor:
    """(T, 4) vote counts (o1, o2, both, neither) of a simulated panel: each rater prefers the target whose ground-truth
    similarity plus independent N(0, noise^2) perception noise is larger (no 'both'/'neither' answers)."""
    q, a, b = triplets.unbind(1)
    ya, yb = truth[q, a].double(), truth[q, b].double()
    eps = torch.randn(len(q), raters, 2, generator=gen, dtype=torch.float64) * noise
    prefers_a = (ya[:, None] + eps[..., 0]) > (yb[:, None] + eps[..., 1])
    o1 = prefers_a.sum(1)
    zeros = torch.zeros_like(o1)
    return torch.stack([o1, raters - o1, zeros, zeros], 1)


def agreement(scores: torch.Tensor, triplets: torch.Tensor, votes: torch.Tensor) -> float:
    """Triplet agreement of a score matrix (Q, C) with the panel's votes on `triplets` (T, 3)."""
    q, a, b = triplets.unbind(1)
    return triplet_agreement(scores[q, a], scores[q, b], votes)
