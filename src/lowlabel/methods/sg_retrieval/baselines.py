"""Training-free scene-graph similarities that IRSGS is compared with: TF-IDF over label bags (the official BoO
TF-IDF when the bag holds object labels only; "labels TF-IDF" when it holds every node label) and the
Weisfeiler-Lehman subtree kernel (Shervashidze et al., JMLR 2011) over the same graphs the GCN reads."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.sg_retrieval.graphs import SceneGraph

TF_WEIGHTINGS = ("raw", "sublinear", "binary")


def tfidf_cosine(docs: Sequence[Sequence[str]], tf: str = "raw") -> torch.Tensor:
    """(N, N) cosine of sklearn TF-IDF vectors of token bags (TfidfTransformer on token counts, as the official BoO
    TF-IDF). tf: "raw" counts, "sublinear" 1 + log(count), or "binary" presence."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    if tf not in TF_WEIGHTINGS:
        raise LowlabelError(f"tf='{tf}': use one of {', '.join(TF_WEIGHTINGS)}")
    counts = CountVectorizer(analyzer=lambda bag: bag, binary=tf == "binary").fit_transform(docs)
    vec = TfidfTransformer(sublinear_tf=tf == "sublinear").fit_transform(counts)
    return torch.from_numpy((vec @ vec.T).toarray()).float()


def wl_labels(graph: SceneGraph, iterations: int) -> list[str]:
    """Every node's WL subtree label at rounds 0..`iterations` (n * (iterations + 1) strings): round 0 is the node
    label; round h+1 is the round-h label followed by the sorted round-h labels of its neighbours in the symmetrised
    graph. The strings themselves stand for the kernel's compressed label ids (equal strings = equal ids)."""
    n = len(graph.node_labels)
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for a, b in graph.edges.tolist():
        if a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)
    current = list(graph.node_labels)
    out = [f"0:{x}" for x in current]
    for h in range(1, iterations + 1):
        current = [f"{current[v]}|{','.join(sorted(current[u] for u in neighbours[v]))}" for v in range(n)]
        out += [f"{h}:{x}" for x in current]
    return out


def wl_cosine(graphs: Sequence[SceneGraph], iterations: int) -> torch.Tensor:
    """(N, N) WL subtree kernel normalised to a cosine, k(G, G') = <phi(G), phi(G')> / (|phi(G)| |phi(G')|), with
    phi = the TF-IDF-weighted counts of the graph's WL labels of rounds 0..`iterations` (IDF: a strengthening of the
    plain-count kernel, as the BoO TF-IDF weights object labels)."""
    if iterations < 0:
        raise LowlabelError(f"iterations={iterations}: the WL kernel needs 0 or more rounds")
    return tfidf_cosine([wl_labels(g, iterations) for g in graphs])
