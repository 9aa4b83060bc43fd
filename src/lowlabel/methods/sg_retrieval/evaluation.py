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


def _first_stage_pool(first_stage: torch.Tensor, rows: torch.Tensor, size: int) -> torch.Tensor:
    """(len(rows), P) each query row's `size` nearest database items by first-stage cosine, itself excluded."""
    f = torch.nn.functional.normalize(first_stage.float(), dim=1)
    sim = f[rows] @ f.T
    sim[torch.arange(len(rows)), rows] = -float("inf")
    return torch.topk(sim, min(size, f.shape[0] - 1), dim=1).indices


def ranking_metrics(z: torch.Tensor, truth: torch.Tensor, *, queries: int = 0, first_stage: torch.Tensor | None = None,
                    pool_size: int = 100, ks: tuple[int, ...] = (5, 10, 20), chunk: int = 1024) -> dict[str, float]:
    """Mean nDCG@k (IRSGS discount) of retrieval by dot product of the unit embeddings z (N, H) over a database of
    all N items, the query excluded: `ndcg@k` ranks the whole database, and with `first_stage` features (N, D) (the
    official ResNet-152) `pool_ndcg@k` re-ranks each query's `pool_size` nearest items by first-stage cosine (the
    official protocol). truth: (N, N) relevance. Queries: the first `queries` items (0 = all), `chunk` at a time, so
    memory stays O(chunk x N)."""
    n = z.shape[0]
    n_q = n if queries <= 0 else min(queries, n)
    sums = {f"ndcg@{k}": 0.0 for k in ks} | ({f"pool_ndcg@{k}": 0.0 for k in ks} if first_stage is not None else {})
    for start in range(0, n_q, chunk):
        rows = torch.arange(start, min(start + chunk, n_q))
        scores, rel = z[rows] @ z.T, truth[rows].to(z.device)
        valid = torch.ones_like(scores, dtype=torch.bool)
        valid[torch.arange(len(rows)), rows] = False
        for k in ks:
            sums[f"ndcg@{k}"] += float(ndcg_at_k(scores, rel, k, "irsgs", valid=valid).sum())
        if first_stage is not None:
            pool = _first_stage_pool(first_stage, rows, pool_size).to(z.device)
            for k in ks:
                sums[f"pool_ndcg@{k}"] += float(ndcg_at_k(scores.gather(1, pool), rel.gather(1, pool), k, "irsgs")
                                                .sum())
    return {key: value / n_q for key, value in sums.items()}


def human_agreement(z: torch.Tensor, triplets: torch.Tensor, votes: torch.Tensor,
                    first_stage: torch.Tensor | None = None, pool_size: int = 100) -> float:
    """Triplet agreement (`metrics.retrieval.triplet_agreement`) of dot-product scores of z (N, H) with human votes
    (T, 4) on triplets (T, 3) of item indices. With `first_stage` features, as the official protocol: a target
    outside the query's `pool_size` first-stage candidates scores -inf, and where both are outside the first-stage
    cosines decide."""
    q, a, b = triplets.unbind(1)
    sa, sb = (z[q] * z[a]).sum(1), (z[q] * z[b]).sum(1)
    if first_stage is None:
        return triplet_agreement(sa, sb, votes)
    pool = _first_stage_pool(first_stage, q, pool_size).to(z.device)
    in_a, in_b = (pool == a[:, None]).any(1), (pool == b[:, None]).any(1)
    f = torch.nn.functional.normalize(first_stage.float(), dim=1)
    fallback = ((f[q] * f[a]).sum(1), (f[q] * f[b]).sum(1))
    inf = torch.full_like(sa, -float("inf"))
    return triplet_agreement(torch.where(in_a, sa, inf), torch.where(in_b, sb, inf), votes, fallback=fallback)
