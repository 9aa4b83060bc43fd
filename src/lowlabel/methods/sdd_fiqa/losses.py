"""SDD-FIQA's equations as pure tensor functions: pair draws, the 1-D Wasserstein distance, the pseudo-labels,
the Huber regression loss (spec sections "Pseudo-label generation" and "Loss").

Pair draws (steps 1-2).
Images are put once in a canonical order (by identity label, ties broken by a fixed projection of the embedding), so
every identity occupies a contiguous range [start, start + count) and the draws do not depend on the input order.
Per repetition and image:
- positives: a uniform subset of min(n_pos, count - 1) other images of the same identity (Floyd's algorithm on
  offsets inside the identity's range: no rejection, no Python loop over images);
- negatives: n_neg distinct images of other identities, uniform over images. They are taken from a *pool*: the
  distinct images among `pool_size` uniform draws, shared by the `chunk_size` anchors of a chunk; each anchor takes a
  uniform random subset of the pool members outside its identity (random keys, top-k). An anchor whose pool holds
  fewer than n_neg valid members, and every anchor when `pool_size` is 0, draws independently (Floyd on offsets over
  the N - count images outside its identity, mapped by index arithmetic). Each anchor's negatives are therefore
  exactly uniform distinct other-identity images, as in the official code; only the joint law differs: anchors of one
  chunk share a pool, so two of them share about n_neg^2 / pool_size negatives on average (official: ~0).
  That is what lets the similarities come from one (chunk x pool) matrix product instead of N * n_neg random row reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lowlabel.errors import LowlabelError


@dataclass(frozen=True)
class Layout:
    """Canonical order of N images: `order[k]` is the input index at sorted position k; per sorted position, the
    identity label, the position where its identity starts and the identity's image count (all (N,) int64, CPU)."""

    order: torch.Tensor
    labels: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.order.numel())


@dataclass(frozen=True)
class ChunkDraws:
    """Draws for the anchors at sorted positions [a0, a1) (S = a1 - a0 rows), for R repetitions.

    pos (R, S, n_pos) sorted positions of positives, valid in columns < pos_count (S,); pool (R, K) sorted positions
    of the pool; neg (R, S, n_neg) sorted positions of negatives; neg_col (R, S, n_neg) their pool columns, valid where
    from_pool (R, S) is True (otherwise the row was drawn independently).
    """

    a0: int
    a1: int
    pos: torch.Tensor
    pos_count: torch.Tensor
    pool: torch.Tensor
    neg: torch.Tensor
    neg_col: torch.Tensor
    from_pool: torch.Tensor


def _projection(d: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A fixed direction (D,) used to order images inside an identity (no RNG involved)."""
    return torch.cos(torch.arange(d, dtype=torch.float64) * 0.7071 + 0.3).to(device=device, dtype=dtype)


def identity_layout(embeddings: torch.Tensor, labels: torch.Tensor) -> Layout:
    """Sort images by (label, embedding . w) and record each sorted row's identity range.

    embeddings (N, D) float; labels (N,) integer identity ids. The tie-break on a fixed projection of the embedding
    makes the layout, and so every draw, invariant to permuting the input (the official code depends on file order).
    """
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise LowlabelError(f"embeddings must be a non-empty (N, D) matrix, got shape {tuple(embeddings.shape)}")
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise LowlabelError(
            f"labels must be a vector with one identity per embedding row: got {tuple(labels.shape)} for "
            f"{embeddings.shape[0]} embeddings"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise LowlabelError(f"labels must be integer identity ids, got dtype {labels.dtype}; map names to ints first")
    key = (embeddings @ _projection(embeddings.shape[1], embeddings.dtype, embeddings.device)).cpu()
    labels = labels.detach().cpu().long()
    by_key = torch.argsort(key, stable=True)
    order = by_key[torch.argsort(labels[by_key], stable=True)]
    sorted_labels = labels[order]
    _, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return Layout(order=order, labels=sorted_labels, start=starts.repeat_interleave(counts),
                  count=counts.repeat_interleave(counts))


def floyd_sample(m: torch.Tensor, k: torch.Tensor, k_max: int, generator: torch.Generator) -> torch.Tensor:
    """Per row, a uniform random subset of k[i] distinct integers in [0, m[i]) (Floyd's algorithm, vectorised).

    m, k (B,) int64 with k <= m and k <= k_max; returns (B, k_max) int64, the subset in columns < k[i], -1 after.
    Loops over the k_max columns only (k_max = 24 in SDD-FIQA), never over rows; no rejection.
    """
    rows = m.shape[0]
    picks = torch.full((rows, k_max), -1, dtype=torch.long)
    for t in range(k_max):
        j = (m - k + t).clamp(min=0)  # Floyd's step: draw from [0, j], take j itself on a collision
        r = (torch.rand(rows, dtype=torch.float64, generator=generator) * (j + 1)).long().minimum(j)
        clash = (picks[:, :t] == r[:, None]).any(dim=1)
        picks[:, t] = torch.where(t < k, torch.where(clash, j, r), -1)
    return picks


def draw_chunk(layout: Layout, a0: int, a1: int, *, n_pos: int, n_neg: int, repeats: int, pool_size: int,
               generator: torch.Generator) -> ChunkDraws:
    """Draw positives and negatives of the anchors at sorted positions [a0, a1) for `repeats` repetitions.

    Random numbers are consumed in a fixed order per chunk and repetition (positives, pool, keys, fallback), so a
    caller that walks the chunks in order with one generator gets the same draws as `sdd_pseudo_labels`.
    """
    size = a1 - a0
    rows = torch.arange(a0, a1)
    start, count = layout.start[a0:a1], layout.count[a0:a1]
    own, others = layout.labels[a0:a1], layout.n - count
    m_pos = (count - 1).clamp(min=0)
    k_pos = m_pos.clamp(max=n_pos)
    big = (m_pos > n_pos).nonzero().squeeze(1)  # identities with more candidates than n_pos: sample them
    every = torch.arange(n_pos)[None, :].expand(size, n_pos)
    all_others = torch.where(every < m_pos[:, None], every, -1)  # the rest take every other image, no draw
    pos = torch.empty((repeats, size, n_pos), dtype=torch.long)
    pool = torch.empty((repeats, pool_size), dtype=torch.long)
    neg = torch.empty((repeats, size, n_neg), dtype=torch.long)
    neg_col = torch.zeros((repeats, size, n_neg), dtype=torch.long)
    from_pool = torch.zeros((repeats, size), dtype=torch.bool)
    for r in range(repeats):
        off = all_others.clone()
        if big.numel():
            off[big] = floyd_sample(m_pos[big], k_pos[big], n_pos, generator)
        local = off + (off >= (rows - start)[:, None]).long()  # skip the anchor itself inside its identity
        pos[r] = torch.where(off >= 0, start[:, None] + local, -1)

        pool[r] = torch.sort(torch.randint(0, layout.n, (pool_size,), generator=generator)).values
        if pool_size >= n_neg:
            dup = torch.zeros(pool_size, dtype=torch.bool)
            dup[1:] = pool[r, 1:] == pool[r, :-1]
            invalid = (layout.labels[pool[r]][None, :] == own[:, None]) | dup[None, :]
            keys = torch.rand(size, pool_size, generator=generator).masked_fill_(invalid, 2.0)
            chosen_keys, neg_col[r] = torch.topk(keys, n_neg, dim=1, largest=False, sorted=False)
            from_pool[r] = (chosen_keys < 2.0).all(dim=1)
            neg[r] = pool[r][neg_col[r]]
        lacking = (~from_pool[r]).nonzero().squeeze(1)
        if lacking.numel():
            o = floyd_sample(others[lacking], torch.full_like(lacking, n_neg), n_neg, generator)
            neg[r, lacking] = torch.where(o < start[lacking, None], o, o + count[lacking, None])
    return ChunkDraws(a0=a0, a1=a1, pos=pos, pos_count=k_pos, pool=pool, neg=neg, neg_col=neg_col,
                      from_pool=from_pool)


def check_layout(layout: Layout, *, n_pos: int, n_neg: int, skip_singletons: bool) -> int:
    """Raise a LowlabelError when SDD-FIQA cannot run on this identity layout; return the number of singletons.

    Singleton identities have no positive pair (the official code fails an assertion); an identity with fewer than
    n_neg images outside it can never collect n_neg distinct negatives (the official code loops forever).
    """
    if n_pos < 1 or n_neg < 1:
        raise LowlabelError(f"n_pos and n_neg must be >= 1, got n_pos={n_pos}, n_neg={n_neg}")
    first = layout.start == torch.arange(layout.n)
    ids, sizes = layout.labels[first], layout.count[first]
    short = ids[layout.n - sizes < n_neg]
    if short.numel():
        raise LowlabelError(
            f"{short.numel()} identit{'y has' if short.numel() == 1 else 'ies have'} fewer than n_neg={n_neg} images "
            f"outside them (e.g. label {int(short[0])}; N={layout.n}); add identities or lower n_neg"
        )
    singles = ids[sizes == 1]
    if singles.numel() and not skip_singletons:
        raise LowlabelError(
            f"{singles.numel()} identit{'y has' if singles.numel() == 1 else 'ies have'} a single image (e.g. label "
            f"{int(singles[0])}), so no positive pair exists; remove them or pass skip_singletons=True "
            "(their label is then NaN)"
        )
    return int(singles.numel())


def sample_pairs(embeddings: torch.Tensor, labels: torch.Tensor, *, n_pos: int = 24, n_neg: int = 24,
                 repeats: int = 12, seed: int = 0, pool_size: int = 128, chunk_size: int = 8192,
                 skip_singletons: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs `sdd_pseudo_labels` uses with the same arguments, as input indices (for checks and references).

    Returns pos (repeats, N, n_pos) with -1 padding and neg (repeats, N, n_neg). Memory O(repeats * N * 48): small
    data only.
    """
    layout = identity_layout(embeddings, labels)
    check_layout(layout, n_pos=n_pos, n_neg=n_neg, skip_singletons=skip_singletons)
    gen = torch.Generator().manual_seed(seed)
    pos = torch.full((repeats, layout.n, n_pos), -1, dtype=torch.long)
    neg = torch.empty((repeats, layout.n, n_neg), dtype=torch.long)
    for a0 in range(0, layout.n, chunk_size):
        a1 = min(a0 + chunk_size, layout.n)
        draws = draw_chunk(layout, a0, a1, n_pos=n_pos, n_neg=n_neg, repeats=repeats, pool_size=pool_size,
                           generator=gen)
        anchors = layout.order[a0:a1]
        pos[:, anchors] = torch.where(draws.pos >= 0, layout.order[draws.pos.clamp(min=0)], -1)
        neg[:, anchors] = layout.order[draws.neg]
    return pos, neg


_BLOCK = 256  # anchors per positive-similarity block: (block x identity-range) matrix products


def _counts(x: torch.Tensor, count: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validity mask (B, m) and count (B,) of the first count[i] entries of each row (all entries when None)."""
    rows, m = x.shape
    if count is None:
        return torch.ones_like(x, dtype=torch.bool), torch.full((rows,), m, device=x.device)
    count = count.to(x.device)
    if bool((count < 1).any()) or bool((count > m).any()):
        raise LowlabelError(f"sample counts must lie in [1, {m}] (the row length); got {count.min()}..{count.max()}")
    return torch.arange(m, device=x.device)[None, :] < count[:, None], count


def wasserstein_1d(u: torch.Tensor, v: torch.Tensor, u_count: torch.Tensor | None = None,
                   v_count: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise W1 distance between two empirical distributions with equal weights per sample.

    u (B, m), v (B, n); optional u_count / v_count (B,): only the first count[i] entries of row i are samples
    (ragged rows as padded matrices). Returns (B,). Spec step 3: W1(P, N) = integral |F_P(t) - F_N(t)| dt, the value of
    `scipy.stats.wasserstein_distance(P, N)`. Equal sizes without counts use the sorted closed form
    mean_k |u_(k) - v_(k)|; otherwise the two CDFs are merged: W1 = sum_k |F_u(x_k) - F_v(x_k)| (x_{k+1} - x_k) over
    the pooled sorted samples x. Unequal sizes are supported in both forms (n / m need not divide).
    """
    if u.ndim != 2 or v.ndim != 2 or u.shape[0] != v.shape[0]:
        raise LowlabelError(f"wasserstein_1d expects (B, m) and (B, n) with the same B; got {tuple(u.shape)}, "
                            f"{tuple(v.shape)}")
    if u_count is None and v_count is None and u.shape[1] == v.shape[1]:
        return (torch.sort(u, dim=1).values - torch.sort(v, dim=1).values).abs().mean(dim=1)
    mu, cu = _counts(u, u_count)
    mv, cv = _counts(v, v_count)
    top = torch.maximum(u.masked_fill(~mu, -torch.inf).amax(1), v.masked_fill(~mv, -torch.inf).amax(1))
    values = torch.cat([torch.where(mu, u, top[:, None]), torch.where(mv, v, top[:, None])], dim=1)
    weights = torch.cat([mu / cu[:, None].to(u.dtype), -(mv / cv[:, None].to(u.dtype))], dim=1).to(u.dtype)
    x, order = torch.sort(values, dim=1)
    cdf_gap = torch.cumsum(weights.gather(1, order), dim=1)[:, :-1]
    return (cdf_gap.abs() * x.diff(dim=1)).sum(dim=1)


def minmax_100(d: torch.Tensor) -> torch.Tensor:
    """Spec step 4 per row (repetition): q = 100 (d - min d) / (max d - min d), NaN entries ignored and kept.

    d (R, N) -> (R, N). A repetition whose distances are all equal (the official code divides by zero) maps to 0.
    """
    finite = torch.isfinite(d)
    lo = d.masked_fill(~finite, torch.inf).amin(dim=1, keepdim=True)
    hi = d.masked_fill(~finite, -torch.inf).amax(dim=1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, 100.0 * (d - lo) / span.clamp(min=torch.finfo(d.dtype).tiny), torch.zeros_like(d))


def _normalised_sorted(embeddings: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rows of `embeddings` in `order`, L2-normalised in place (the one extra copy of the matrix)."""
    es = embeddings.detach().index_select(0, order.to(embeddings.device))
    norms = es.norm(dim=1, keepdim=True)
    if not bool((norms > 0).all()) or not bool(torch.isfinite(norms).all()):
        raise LowlabelError("embeddings hold zero or non-finite rows; drop those images before labelling")
    return es.div_(norms)


def _chunk_distances(es: torch.Tensor, lay_start: torch.Tensor, lay_count: torch.Tensor, draws: ChunkDraws,
                     out: torch.Tensor) -> None:
    """W1 distances of one chunk's anchors for every repetition, written into out[:, a0:a1] (R, S)."""
    a0, a1, device = draws.a0, draws.a1, es.device
    anchors = es[a0:a1]
    neg_sims = torch.empty(draws.neg.shape, dtype=es.dtype, device=device)
    for r in range(draws.neg.shape[0]):
        ok = draws.from_pool[r].to(device)
        if bool(ok.any()):
            pool_sims = anchors @ es[draws.pool[r].to(device)].T  # (S, K): the chunk-by-pool matrix product
            neg_sims[r] = pool_sims.gather(1, draws.neg_col[r].to(device))
        lacking = (~ok).nonzero().squeeze(1)
        for f in lacking.split(_BLOCK):  # independent draws: gather the rows and take dot products
            rows = es[draws.neg[r].to(device)[f]]  # (F, n_neg, D)
            neg_sims[r, f] = torch.einsum("fkd,fd->fk", rows, anchors[f])
    repeats, size, n_pos = draws.pos.shape
    pos_sims = torch.empty((size, repeats, n_pos), dtype=es.dtype, device=device)
    for b0 in range(a0, a1, _BLOCK):
        b1 = min(b0 + _BLOCK, a1)
        lo, hi = int(lay_start[b0]), int(lay_start[b1 - 1] + lay_count[b1 - 1])
        block = es[b0:b1] @ es[lo:hi].T  # (b, identity range): every positive pair of these anchors
        cols = (draws.pos[:, b0 - a0 : b1 - a0].to(device) - lo).clamp(min=0).transpose(0, 1).reshape(b1 - b0, -1)
        pos_sims[b0 - a0 : b1 - a0] = block.gather(1, cols).view(b1 - b0, repeats, n_pos)
    count = draws.pos_count.to(device)
    width = max(int(count.max()), 1)  # drop all-padding columns (small identities) before sorting
    u_count = None if bool((count == width).all()) else count.clamp(min=1).repeat(repeats)
    d = wasserstein_1d(pos_sims[:, :, :width].transpose(0, 1).reshape(repeats * size, width),
                       neg_sims.reshape(repeats * size, -1), u_count=u_count).view(repeats, size)
    out[:, a0:a1] = torch.where(count > 0, d, torch.nan)


def sdd_pseudo_labels(embeddings: torch.Tensor, labels: torch.Tensor, n_pos: int = 24, n_neg: int = 24,
                      repeats: int = 12, seed: int = 0, *, pool_size: int = 128, chunk_size: int = 8192,
                      skip_singletons: bool = False) -> torch.Tensor:
    """SDD-FIQA quality pseudo-labels Q (N,) in [0, 100], in input order (spec "Pseudo-label generation").

    embeddings (N, D) from a face recogniser (L2-normalised here, cosine similarity as in the official code);
    labels (N,) integer identity ids. Per repetition r and image i: P_i^r = similarities to min(n_pos, n_y - 1)
    same-identity images, N_i^r = similarities to n_neg distinct other-identity images (uniform over images),
    d_i^r = W1(P_i^r, N_i^r), q^r = min-max of d^r to [0, 100] over all images; Q = mean_r q^r.
    Memory: the input plus one sorted, normalised copy plus a workspace set by chunk_size, pool_size and the largest
    identity (never N x N); time linear in N. Deterministic for fixed (seed, pool_size, chunk_size) and invariant to
    permuting the input. Deviations from the official code (see the module docstring): chunk-shared negative pools
    (`pool_size=0` draws every anchor's negatives independently, slower); a seed; errors instead of a crash (singleton
    identities) or an endless loop (fewer than n_neg images outside an identity). With `skip_singletons`, singleton
    identities get NaN, are left out of the min-max, and still serve as negatives; count them with isnan(Q).sum().
    """
    if repeats < 1 or chunk_size < 1 or pool_size < 0:
        raise LowlabelError(f"need repeats >= 1, chunk_size >= 1, pool_size >= 0; got {repeats}, {chunk_size}, "
                            f"{pool_size}")
    if not embeddings.dtype.is_floating_point:
        raise LowlabelError(f"embeddings must be floating point, got {embeddings.dtype}")
    layout = identity_layout(embeddings, labels)
    check_layout(layout, n_pos=n_pos, n_neg=n_neg, skip_singletons=skip_singletons)
    es = _normalised_sorted(embeddings, layout.order)
    gen = torch.Generator().manual_seed(seed)
    d = torch.empty((repeats, layout.n), dtype=es.dtype, device=es.device)
    with torch.no_grad():
        for a0 in range(0, layout.n, chunk_size):
            draws = draw_chunk(layout, a0, min(a0 + chunk_size, layout.n), n_pos=n_pos, n_neg=n_neg,
                               repeats=repeats, pool_size=pool_size, generator=gen)
            _chunk_distances(es, layout.start, layout.count, draws, d)
    del es
    q = minmax_100(d).mean(dim=0)
    out = torch.empty_like(q)
    out[layout.order.to(q.device)] = q
    return out


def intra_class_labels(embeddings: torch.Tensor, labels: torch.Tensor, n_pos: int = 24, repeats: int = 12,
                       seed: int = 0, *, pool_size: int = 128, chunk_size: int = 8192,
                       skip_singletons: bool = False) -> torch.Tensor:
    """The spec's intra-class-only ablation (N,) in [0, 100]: SDD-FIQA with the Neg-Sim distribution removed.

    Per repetition r the label is the mean of P_i^r, the similarities to the same positives `sdd_pseudo_labels` draws
    with the same arguments, then min-max to [0, 100] per repetition and the mean over repetitions, as for SDD-FIQA.
    Singletons (with `skip_singletons`) get NaN. Small data only: the draws are materialised (`sample_pairs`).
    """
    pos, _ = sample_pairs(embeddings, labels, n_pos=n_pos, repeats=repeats, seed=seed, pool_size=pool_size,
                          chunk_size=chunk_size, skip_singletons=skip_singletons)
    f = torch.nn.functional.normalize(embeddings.detach(), dim=1)
    valid = pos >= 0
    count = valid.sum(dim=2)
    means = torch.empty(pos.shape[:2], dtype=f.dtype, device=f.device)
    for r in range(repeats):  # one repetition at a time: (N, n_pos, D) rows, not (R, N, n_pos, D)
        sims = torch.einsum("npd,nd->np", f[pos[r].clamp(min=0)], f)
        means[r] = (sims * valid[r]).sum(dim=1) / count[r].clamp(min=1)
    return minmax_100(torch.where(count > 0, means, torch.nan)).mean(dim=0)


def huber_regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1") -> torch.Tensor:
    """Regression of predicted quality to pseudo-labels (spec "Loss"): mean_b h(pred_b - Q_b).

    pred, target (B,). kind 'smooth_l1' (official default, beta 1: 0.5 r^2 if |r| < 1 else |r| - 0.5), 'l1', 'l2'.
    Targets stay on the 0-100 scale as in the official code.
    """
    if kind == "smooth_l1":
        return torch.nn.functional.smooth_l1_loss(pred, target, beta=1.0)
    if kind == "l1":
        return torch.nn.functional.l1_loss(pred, target)
    if kind == "l2":
        return torch.nn.functional.mse_loss(pred, target)
    raise LowlabelError(f"unknown regression loss '{kind}'; use smooth_l1, l1 or l2")
