"""DyML hot path: `retrieval_per_scale` (mAP, ASI, R@1/10/20 at three levels over a whole gallery) as the gallery
grows, with the torch backend (chunked exact matmul + stable sort, the default) against faiss (exact IndexFlatIP
searched to full depth) and against the dense way (one (Q, G) similarity matrix, one argsort, ranking_metrics on the
sorted relevance), where that fits in memory.

    python benchmarks/dyml.py [--quick] [--threads N]

Embeddings: random unit vectors (512-d, as DyML) with a three-level hierarchy (20 images per fine class, 10 fine
classes per middle class, 5 coarse classes). Queries: every row leave-one-out where Q = N; at 10^5 a fixed subset
of Q rows (query_index) against the whole gallery (full leave-one-out there is Q / subset times that cost, linear in
Q: the per-query column). Peak memory is resident-set growth. Writes benchmarks/results/dyml.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure, write_results
from lowlabel.methods.dyml.evaluation import retrieval_per_scale
from lowlabel.metrics.retrieval import ranking_metrics

DIM = 512
DENSE_LIMIT = 2 * 10**7  # query-gallery pairs the dense way is run at (its sort indices take 8 bytes per pair)


def world(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n random embeddings (n, DIM) nudged towards class centres, labels (n, 3) fine/middle/coarse."""
    g = torch.Generator().manual_seed(seed)
    fine = torch.arange(n) // 20
    middle, coarse = fine // 10, (fine // 10) % 5
    centres = torch.randn(int(fine.max()) + 1, DIM, generator=g)
    emb = torch.nn.functional.normalize(centres[fine] + 1.5 * torch.randn(n, DIM, generator=g), dim=1)
    return emb, torch.stack([fine, middle, coarse], 1)


def dense(emb: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor) -> dict:
    """The dense way: the (Q, G) similarities, the self-match pushed last, one argsort, ranking_metrics per level."""
    sims = emb[queries] @ emb.t()
    sims[torch.arange(len(queries)), queries] = -torch.inf
    order = sims.argsort(dim=1, descending=True)[:, :-1]
    out = {}
    for level in range(3):
        rel = labels[order, level] == labels[queries, level][:, None]
        m = ranking_metrics(rel)
        keep = rel.any(1)
        out[level] = {"map": float(m["ap"][keep].mean()), "asi": float(m["asi"][keep].mean())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [(1_000, 1_000), (10_000, 200)] if args.quick else [(10_000, 1_000), (100_000, 100)]
    rows = []
    for n, q in cases:
        emb, labels = world(n)
        queries = torch.arange(q) * (n // q)
        index = None if q == n else queries
        results = {}
        for backend in ("torch", "faiss"):
            got = {}

            def run(backend: str = backend, got: dict = got, emb: torch.Tensor = emb, labels: torch.Tensor = labels,
                    index: torch.Tensor | None = index) -> None:
                got["r"] = retrieval_per_scale(emb, labels, index, backend=backend)

            m = measure(run)
            results[backend] = got["r"]
            rows.append({"gallery": n, "queries": q, "way": backend, "seconds": round(m["seconds_best"], 3),
                         "ms_per_query": round(1000 * m["seconds_best"] / q, 3), "peak_mib": round(m["peak_mib"], 1),
                         "overall_map": round(got["r"]["overall"]["map"], 5),
                         "overall_asi": round(got["r"]["overall"]["asi"], 5)})
        gap = max(abs(results["torch"][lv][k] - results["faiss"][lv][k]) for lv in ("fine", "middle", "coarse")
                  for k in ("map", "asi"))
        rows[-1]["max_abs_diff_vs_torch"] = rows[-2]["max_abs_diff_vs_torch"] = float(f"{gap:.2e}")
        if q * n <= DENSE_LIMIT:
            got = {}
            m = measure(lambda got=got, emb=emb, labels=labels, queries=queries: got.update(
                r=dense(emb, labels, queries)))
            gap = max(abs(results["torch"][name][k] - got["r"][i][k]) for i, name in enumerate(("fine", "middle",
                                                                                                  "coarse"))
                      for k in ("map", "asi"))
            rows.append({"gallery": n, "queries": q, "way": "dense", "seconds": round(m["seconds_best"], 3),
                         "ms_per_query": round(1000 * m["seconds_best"] / q, 3), "peak_mib": round(m["peak_mib"], 1),
                         "overall_map": None, "overall_asi": None, "max_abs_diff_vs_torch": float(f"{gap:.2e}")})
        else:
            rows.append({"gallery": n, "queries": q, "way": "dense", "seconds": None, "ms_per_query": None,
                         "peak_mib": round(q * n * 12 / 2**20, 1), "overall_map": None, "overall_asi": None,
                         "max_abs_diff_vs_torch": None})
    notes = (f"{args.threads} thread(s), shared CPU; seconds = one run; dense rows with seconds None were not run: "
             "peak_mib there is the estimate of its (Q, G) float32 scores + int64 order (12 bytes per pair). "
             "Full leave-one-out over 10^5 = ms_per_query x 10^5.")
    write_results("dyml", rows, notes)


if __name__ == "__main__":
    main()
