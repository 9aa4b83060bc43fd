"""Scene graphs as IRSGS builds them, and packed storage that turns index lists into sparse (PyG-style) batches.

Node order: object labels, then attribute labels, then one node per relation (its predicate label). Directed edges
attribute -> object, subject -> predicate, predicate -> object; batches use the binarised symmetrised adjacency
A = 1[(A + A^T) > 0] (spec: "Graph"), stored as an edge list holding each undirected edge in both directions once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from lowlabel.errors import LowlabelError

_NON_ALNUM = re.compile(r"[^0-9a-zA-Z]+")


def clean_label(text: str) -> str:
    """VG label clean-up of the official loader: non-alphanumerics -> space, lower case, single spaces."""
    return " ".join(_NON_ALNUM.sub(" ", text).lower().split())


@dataclass
class SceneGraph:
    """One image's graph: `node_labels` (n,) and directed `edges` (E, 2) int64 of (from, to) node indices."""

    image_id: str
    node_labels: list[str]
    edges: np.ndarray

    def adjacency(self) -> np.ndarray:
        """(n, n) uint8 symmetrised binary adjacency 1[(A + A^T) > 0]."""
        n = len(self.node_labels)
        adj = np.zeros((n, n), dtype=np.uint8)
        adj[self.edges[:, 0], self.edges[:, 1]] = 1
        return np.maximum(adj, adj.T)


def build_graph(
    image_id: str,
    objects: Sequence[str],
    attributes: Sequence[Sequence[str]],
    relations: Sequence[tuple[int, str, int]],
    where: str = "input",
) -> SceneGraph:
    """The IRSGS graph of one image from object labels, per-object attribute labels and (subject, predicate, object)
    relations over object positions. An image with no object, or a relation naming a missing object, is an error
    that names `where` (the file) and `image_id`."""
    if not objects:
        raise LowlabelError(f"{where}: scene graph of image {image_id} has no object; drop the record or add its "
                            "objects")
    if len(attributes) != len(objects):
        raise LowlabelError(
            f"{where}: scene graph of image {image_id}: {len(attributes)} attribute lists for {len(objects)} objects"
        )
    n_obj = len(objects)
    for k, (s, pred, o) in enumerate(relations):
        if not (0 <= s < n_obj and 0 <= o < n_obj):
            raise LowlabelError(
                f"{where}: scene graph of image {image_id}: relation {k} ('{pred}') links objects {s} -> {o}, but the "
                f"graph has objects 0..{n_obj - 1}; fix the relation's subject/object ids"
            )
    attr_owner = [j for j, attrs in enumerate(attributes) for _ in attrs]
    labels = [clean_label(x) for x in objects]
    labels += [clean_label(a) for attrs in attributes for a in attrs]
    labels += [clean_label(p) for _, p, _ in relations]
    n_attr = len(attr_owner)
    first_pred = n_obj + n_attr
    edges = [(n_obj + i, j) for i, j in enumerate(attr_owner)]
    for k, (s, _, o) in enumerate(relations):
        edges += [(s, first_pred + k), (first_pred + k, o)]
    return SceneGraph(str(image_id), labels, np.asarray(edges, dtype=np.int64).reshape(-1, 2))


def from_adjacency(image_id: str, node_labels: Sequence[str], adj: object, where: str = "input") -> SceneGraph:
    """A graph given as node labels and an (n, n) directed 0/1 adjacency (the official pickle layout); `where`
    (the file) is named in errors."""
    n = len(node_labels)
    if n == 0:
        raise LowlabelError(f"{where}: scene graph of image {image_id} has no node; drop the record")
    try:
        adj = np.asarray(adj, dtype=np.float64)
    except (TypeError, ValueError):
        raise LowlabelError(f"{where}: scene graph of image {image_id}: adj is not a numeric matrix") from None
    if adj.shape != (n, n):
        raise LowlabelError(f"{where}: scene graph of image {image_id}: adj is {adj.shape} but there are {n} node "
                            "labels")
    if not np.isfinite(adj).all():
        raise LowlabelError(f"{where}: scene graph of image {image_id}: adj holds NaN or Inf")
    src, dst = np.nonzero(adj)
    return SceneGraph(str(image_id), [clean_label(x) for x in node_labels], np.stack([src, dst], 1).astype(np.int64))


def shapes_graph(scene_graph: dict, image_id: str) -> SceneGraph:
    """Adapter for the shapes world: objects = shape names, attributes = (colour, size), its relations."""
    objects = [o["shape"] for o in scene_graph["objects"]]
    attributes = [[o["colour"], o["size"]] for o in scene_graph["objects"]]
    relations = [(int(s), str(p), int(o)) for s, p, o in scene_graph["relations"]]
    return build_graph(image_id, objects, attributes, relations)


class GraphBatch(NamedTuple):
    """Graphs concatenated into one disconnected graph (the PyG batch layout, no padding).

    x: (n, D) node features, or, when `labels` is given, the (V, D) label table and labels: (n,) int64 the row of
    each node (node features = x[labels]; the model then embeds each vocabulary row once); edge_index: (2, E) int64
    global node ids, both directions of every undirected edge, no duplicates; batch: (n,) int64 graph of each node
    (non-decreasing); num_graphs: B.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    labels: torch.Tensor | None = None


def _ranges(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated aranges [starts[i], starts[i] + counts[i]) and, per element, its range index i."""
    owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
    offset = torch.arange(len(owner)) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    return starts[owner] + offset, owner


class PackedGraphs:
    """Many graphs in flat tensors (node label ids, symmetrised local edges, offsets); `batch(index, table)` builds
    the sparse batch of any subset without a Python loop over graphs."""

    def __init__(self, graphs: Sequence[SceneGraph], vocab: Sequence[str] | None = None) -> None:
        if not graphs:
            raise LowlabelError("no scene graph was given; check the input file")
        self.vocab = list(vocab) if vocab is not None else sorted({x for g in graphs for x in g.node_labels})
        index = {w: i for i, w in enumerate(self.vocab)}
        self.unknown = len(self.vocab)  # id of labels outside `vocab` (zero features, like GloVe's missing words)
        self.ids = [g.image_id for g in graphs]
        ids = [index.get(x, self.unknown) for g in graphs for x in g.node_labels]
        self.labels = torch.tensor(ids, dtype=torch.long)
        sizes = torch.tensor([len(g.node_labels) for g in graphs], dtype=torch.long)
        self.node_ptr = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
        # symmetrise and de-duplicate every graph's edges at once, on global node ids: A = 1[(A + A^T) > 0]
        local = torch.from_numpy(np.concatenate([g.edges for g in graphs]).reshape(-1, 2)).long()
        owner = torch.repeat_interleave(torch.arange(len(graphs)), torch.tensor([len(g.edges) for g in graphs]))
        glob = local + self.node_ptr[owner, None]
        both = torch.cat([glob, glob.flip(1)])
        total = int(self.node_ptr[-1])
        keys = torch.unique(both[:, 0] * total + both[:, 1])  # sorted: grouped by graph, then by source node
        src, dst = keys // total, keys % total
        graph_of_edge = torch.searchsorted(self.node_ptr, src, right=True) - 1
        self.edges = torch.stack([src, dst], 1) - self.node_ptr[graph_of_edge, None]  # (E, 2) local ids
        self.edge_ptr = torch.cat([sizes.new_zeros(1), torch.bincount(graph_of_edge, minlength=len(graphs)).cumsum(0)])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sizes(self) -> torch.Tensor:
        """(G,) node count of every graph."""
        return self.node_ptr[1:] - self.node_ptr[:-1]

    def label_table(self, embedder: object) -> torch.Tensor:
        """(V + 1, D) node-feature table: the embedder's rows for `vocab` plus a zero row for unknown labels."""
        rows = embedder.embed(self.vocab)  # type: ignore[attr-defined]
        return torch.cat([rows, rows.new_zeros(1, rows.shape[1])])

    def batch(self, index: torch.Tensor, table: torch.Tensor) -> GraphBatch:
        """Sparse batch of graphs `index` (B,), in that order: the (V + 1, D) table with each node's row `labels`
        (n,), the symmetrised edge_index (2, E) and the node -> graph vector (n,). Tensors land on table.device."""
        index = index.cpu().long()
        counts = self.sizes[index]
        node, graph = _ranges(self.node_ptr[index], counts)
        ecounts = self.edge_ptr[index + 1] - self.edge_ptr[index]
        edge, egraph = _ranges(self.edge_ptr[index], ecounts)
        first = counts.cumsum(0) - counts  # first node of each graph inside the batch
        edge_index = (self.edges[edge] + first[egraph, None]).T
        device = table.device
        return GraphBatch(table, edge_index.contiguous().to(device), graph.to(device), len(index),
                          self.labels[node].to(device))
