"""IRSGS hot paths: graph embedding throughput, faiss index build/query latency, caption-relevance matrix.

python benchmarks/sg_retrieval.py [--quick]
- graphs/s of IRSGS-GCN (H = 300, 384-d node features) on shapes-world graphs at batch 32 and 512, and one training
  step: sparse batches (PyG GCNConv on concatenated graphs, this library) vs zero-padded dense batches (DenseGCNConv,
  the official layout);
- faiss IndexFlatIP build and query latency (k = 10) for 1e4 and 1e5 unit vectors vs torch matmul + topk;
- caption_relevance for 1e4 images x 5 captions (S S^T / 25, chunked) vs the naive (5N x 5N) cosine matrix averaged
  per 5x5 block (the naive one only at sizes where it fits).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure, write_results
from lowlabel.methods.sg_retrieval.graphs import PackedGraphs, shapes_graph
from lowlabel.methods.sg_retrieval.losses import caption_relevance
from lowlabel.methods.sg_retrieval.model import GraphEmbedding
from lowlabel.nn.text import RandomWordEmbeddings


class DenseReference(torch.nn.Module):
    """The obvious alternative (and the official layout): zero-padded (B, N_max, D) batches, a dense (B, N, N)
    adjacency and PyG DenseGCNConv layers with a node mask, holding the same weights as `GraphEmbedding`."""

    def __init__(self, sparse: GraphEmbedding) -> None:
        super().__init__()
        from torch_geometric.nn import DenseGCNConv

        layers = []
        for conv in sparse.convs:
            layer = DenseGCNConv(conv.in_channels, conv.out_channels)
            layer.load_state_dict(conv.state_dict())
            layers.append(layer)
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, table: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor, num_graphs: int,
                labels: torch.Tensor) -> torch.Tensor:
        from torch_geometric.utils import to_dense_adj, to_dense_batch

        x, mask = to_dense_batch(table[labels], batch, batch_size=num_graphs)
        adj = to_dense_adj(edge_index, batch, batch_size=num_graphs)
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h, adj, mask=mask)
            h = torch.relu(h) if i < len(self.layers) - 1 else h
        return torch.nn.functional.normalize(h.sum(1) / mask.sum(1, keepdim=True), dim=-1)


def _cpu_timed(fn: Callable[[], object], repeat: int) -> dict:
    """`measure` plus process CPU seconds per call (the box is shared, so wall time alone misleads)."""
    cpu0 = time.process_time()
    m = measure(fn, repeat=repeat, warmup=1)
    return {**m, "cpu_s_per_call": (time.process_time() - cpu0) / (repeat + 1)}


def bench_embedding(n_graphs: int) -> list[dict]:
    """IRSGS-GCN (H = 300, 384-d features): inference graphs/s at batch 32 / 512 and one training step (forward +
    backward, 64 graphs = 32 pairs), sparse batches (this library) vs dense padded batches (DenseGCNConv)."""
    from lowlabel.data.synth.shapes import ShapesDataset

    world = ShapesDataset(n_graphs, seed=0)
    packed = PackedGraphs([shapes_graph(world.scene(i).scene_graph(), str(i)) for i in range(n_graphs)])
    table = packed.label_table(RandomWordEmbeddings(384))
    torch.manual_seed(0)
    sparse = GraphEmbedding(in_dim=384, hidden=300)
    dense = DenseReference(sparse)
    rows = []
    for name, model in (("sparse batches (GCNConv)", sparse), ("dense padded (DenseGCNConv)", dense)):
        for batch in (32, 512):
            chunks = [packed.batch(c, table) for c in torch.split(torch.arange(n_graphs), batch)]

            def embed(model=model, chunks=chunks) -> None:
                with torch.no_grad():
                    for b in chunks:
                        model(*b)

            m = _cpu_timed(embed, repeat=2)
            rows.append({"bench": "embed", "variant": name, "batch": batch, "n": n_graphs,
                         "graphs_per_s": n_graphs / m["seconds_best"], **m})
        step_batch = packed.batch(torch.arange(64), table)

        def step(model=model, b=step_batch) -> None:
            z = model(*b)
            (z[:32] * z[32:]).sum().backward()

        m = _cpu_timed(step, repeat=5)
        rows.append({"bench": "train step", "variant": name, "batch": 64, "n": 64, **m})
    with torch.no_grad():
        gap = (sparse(*step_batch) - dense(*step_batch)).abs().max().item()
    rows.append({"bench": "embed", "variant": "max |sparse - dense|", "value": gap})
    return rows


def bench_index(sizes: list[int], dim: int = 300, n_queries: int = 100) -> list[dict]:
    import faiss

    rows = []
    gen = torch.Generator().manual_seed(0)
    for n in sizes:
        base = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)
        queries = base[:n_queries].numpy().copy()
        data = base.numpy()
        holder: dict = {}

        def build(data=data, holder=holder) -> None:
            index = faiss.IndexFlatIP(data.shape[1])
            index.add(data)
            holder["index"] = index

        mb = measure(build, repeat=3)
        index = holder["index"]
        m1 = measure(lambda index=index, queries=queries: index.search(queries[:1], 10), repeat=20, warmup=2)
        mq = measure(lambda index=index, queries=queries: index.search(queries, 10), repeat=5, warmup=1)
        qt = torch.from_numpy(queries)
        mt = measure(lambda base=base, qt=qt: torch.topk(qt @ base.T, 10, dim=1), repeat=5, warmup=1)
        rows.append({"bench": "index", "variant": "faiss IndexFlatIP", "n": n, "build_s": mb["seconds_best"],
                     "query1_ms": 1e3 * m1["seconds_best"], "query100_ms": 1e3 * mq["seconds_best"],
                     "torch_query100_ms": 1e3 * mt["seconds_best"], "peak_mib": mb["peak_mib"]})
    return rows


def naive_relevance(emb: torch.Tensor, k: int = 5) -> torch.Tensor:
    """(N, N) from the full (kN x kN) cosine matrix averaged over k x k blocks (rows grouped by image)."""
    e = torch.nn.functional.normalize(emb, dim=1)
    full = e @ e.T
    n = emb.shape[0] // k
    return full.reshape(n, k, n, k).mean((1, 3))


def bench_relevance(sizes: list[int], naive_max: int, dim: int = 384) -> list[dict]:
    rows = []
    for n in sizes:
        emb = torch.randn(n * 5, dim, generator=torch.Generator().manual_seed(n))
        owner = torch.arange(n).repeat_interleave(5)
        m = measure(lambda emb=emb, owner=owner, n=n: caption_relevance(emb, owner, n_images=n), repeat=2, warmup=1)
        rows.append({"bench": "relevance", "variant": "chunked S S^T", "n": n, "captions": 5 * n, **m,
                     "output_mib": n * n * 4 / 2**20})
        if n <= naive_max:
            mn = measure(lambda emb=emb: naive_relevance(emb), repeat=2, warmup=1)
            rows.append({"bench": "relevance", "variant": "naive 5Nx5N", "n": n, "captions": 5 * n, **mn,
                         "output_mib": n * n * 4 / 2**20})
            err = (caption_relevance(emb, owner, n_images=n) - naive_relevance(emb)).abs().max().item()
            rows[-1]["max_abs_diff"] = err
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    np.random.seed(0)
    rows = bench_embedding(256 if args.quick else 1024)
    with torch.no_grad():
        if args.quick:
            rows += bench_index([10_000]) + bench_relevance([1000], naive_max=1000)
        else:
            rows += bench_index([10_000, 100_000]) + bench_relevance([2000, 10_000], naive_max=2000)
    write_results("sg_retrieval", rows, notes=f"CPU, {torch.get_num_threads()} torch thread(s); graph sizes from the "
                  "shapes world (mean ~36 nodes, max ~96)")

if __name__ == "__main__":
    main()
