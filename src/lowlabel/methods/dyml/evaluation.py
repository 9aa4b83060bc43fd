"""DyML evaluation: retrieval metrics at each semantic scale and their mean (spec "Evaluation protocol").

Vehicle and Animal have one benchmark per scale (own query and gallery lists): call
`lowlabel.metrics.retrieval.retrieval_metrics` per scale and `mean_over_scales` on the results. Product and the
demo have one image set with all labels: `retrieval_per_scale` does both. Whether the queries are inside the
gallery is a switch, as the benchmark never said (`top1_rows` gives [H]'s "drop the rank-1 item" variant).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from lowlabel.errors import LowlabelError
from lowlabel.metrics.retrieval import retrieval_metrics

LEVELS = ("fine", "middle", "coarse")


def retrieval_per_scale(
    gallery_emb: torch.Tensor,
    gallery_labels: torch.Tensor,
    query_index: torch.Tensor | None = None,
    query_emb: torch.Tensor | None = None,
    query_labels: torch.Tensor | None = None,
    ks: tuple[int, ...] = (1, 10, 20),
    *,
    levels: Sequence[str] = LEVELS,
    backend: str = "torch",
) -> dict[str, dict[str, float]]:
    """`retrieval_metrics` at every level, plus their mean under "overall".

    gallery_labels (G, L) and query_labels (Q, L): one column per level, named by `levels` (fine first). Queries
    as in `retrieval_metrics`: all gallery rows leave-one-out (default), the rows `query_index`, or a separate set.
    Returns {level: {"map", "asi", "r_at_<k>"}, "overall": the same keys averaged over the levels}.
    """
    gallery_labels = torch.as_tensor(gallery_labels)
    if gallery_labels.dim() != 2 or gallery_labels.shape[1] != len(levels):
        raise LowlabelError(f"gallery_labels has shape {tuple(gallery_labels.shape)}; give (G, {len(levels)}), one "
                            f"column per level {tuple(levels)}")
    if query_labels is not None:
        query_labels = torch.as_tensor(query_labels)
        if query_labels.dim() != 2 or query_labels.shape[1] != len(levels):
            raise LowlabelError(f"query_labels has shape {tuple(query_labels.shape)}; give (Q, {len(levels)})")
    out = {
        name: retrieval_metrics(gallery_emb, gallery_labels[:, i], query_index, query_emb,
                                None if query_labels is None else query_labels[:, i], ks, backend=backend)
        for i, name in enumerate(levels)
    }
    out["overall"] = mean_over_scales(out)
    return out


def mean_over_scales(per_level: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The per-dataset "overall" numbers: each metric averaged over the levels ("overall" itself is ignored)."""
    scales = [m for name, m in per_level.items() if name != "overall"]
    if not scales:
        raise LowlabelError("no level results to average")
    keys = scales[0].keys()
    if any(m.keys() != keys for m in scales):
        raise LowlabelError("the levels were evaluated with different metrics; use the same ks for every level")
    return {k: sum(m[k] for m in scales) / len(scales) for k in keys}


def top1_rows(query_emb: torch.Tensor, gallery_emb: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """(Q,) the most similar gallery row of each query (cosine), for [H]'s protocol, which treats the gallery as
    holding the queries and removes each query's rank-1 item: pass it as `query_index` with `query_emb`."""
    g = F.normalize(gallery_emb.detach().float(), dim=1)
    q = F.normalize(query_emb.detach().float().to(g.device), dim=1)
    return torch.cat([(q[s : s + chunk] @ g.t()).argmax(1) for s in range(0, q.shape[0], chunk)])
