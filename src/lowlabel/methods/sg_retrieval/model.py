"""IRSGS-GCN / IRSGS-GIN: a graph network (PyTorch Geometric layers, sparse batches) mapping a scene graph to a
unit vector."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from lowlabel.extras import require
from lowlabel.nn.heads import mlp


class GraphEmbedding(nn.Module):
    """Scene graph -> L2-normalised embedding (spec "Architecture"); score = dot product of two embeddings.

    conv="gcn": `layers` GCNConv (D^-1/2 (A with unit diagonal) D^-1/2 X W + b): in_dim -> H -> ... -> H.
    conv="gin": `layers` GINConv (eps = 0, fixed) with MLP Linear(in -> gin_mlp_hidden) + ReLU + Linear(-> H).
    ReLU between layers, none after the last. Readout: sum over a graph's nodes / its node count, then L2 norm.
    The layers run on sparse batches (graphs concatenated, edge_index), which compute the same function as the
    official DenseGCNConv / DenseGINConv on each graph's real nodes, and share their parameter names.
    Deviation (default): no padded slot exists, so a graph's embedding does not depend on the batch it is in.
    `official_padding=True` reproduces the official dense code, whose batches are zero-padded to the largest graph
    of the call with no mask: every padded slot evolves like an isolated zero-feature node (bias-driven vector p)
    and the readout is (sum of real nodes + (N_max - n) p) / n.
    """

    def __init__(
        self,
        *,
        in_dim: int = 384,
        hidden: int = 300,
        layers: int = 3,
        conv: str = "gcn",
        gin_mlp_hidden: int = 512,
        official_padding: bool = False,
    ) -> None:
        super().__init__()
        require("torch_geometric", "graph", "the scene-graph encoder")
        from torch_geometric.nn import GCNConv, GINConv

        if conv not in ("gcn", "gin"):
            raise ValueError(f"conv='{conv}': use 'gcn' or 'gin'")
        if layers < 1:
            raise ValueError(f"layers={layers}: need at least one graph layer")
        dims = [in_dim] + [hidden] * layers
        if conv == "gcn":
            # the normalised adjacency is built once per batch (`propagation`) and shared by the layers
            convs = [GCNConv(dims[i], dims[i + 1], normalize=False) for i in range(layers)]
        else:  # GIN MLP: Linear, ReLU, Linear (the official `nn.0` / `nn.2` parameter names)
            convs = [GINConv(mlp([dims[i], gin_mlp_hidden, dims[i + 1]], norm=None), eps=0.0, train_eps=False)
                     for i in range(layers)]
        self.convs = nn.ModuleList(convs)
        self.conv, self.in_dim = conv, in_dim
        self.official_padding = official_padding
        self.out_dim = hidden

    def propagation(self, edge_index: torch.Tensor, num_nodes: int, dtype: torch.dtype) -> torch.Tensor:
        """(n, n) sparse CSR matrix the layers aggregate with, built once per batch and shared by every layer:
        GCN: D^-1/2 (A with unit diagonal) D^-1/2 (PyG `gcn_norm`, self-loops added where missing); GIN: A."""
        from torch_geometric.nn.conv.gcn_conv import gcn_norm
        from torch_geometric.utils import to_torch_csr_tensor

        if self.conv == "gcn":
            edge_index, weight = gcn_norm(edge_index, None, num_nodes, add_self_loops=True, dtype=dtype)
        else:
            weight = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
        with warnings.catch_warnings():  # torch's notices that sparse CSR is beta and unchecked
            warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")
            return to_torch_csr_tensor(edge_index.flip(0), weight, size=(num_nodes, num_nodes))  # adj_t[dst, src]

    def _first_from_table(self, table: torch.Tensor, labels: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """First layer with its input linear map applied to the V vocabulary rows, then gathered per node: exact,
        since Lin(table)[labels] = Lin(table[labels]) and aggregation is linear (GIN: bias added after it)."""
        first = self.convs[0]
        if self.conv == "gcn":
            return first.propagate(adj, x=first.lin(table)[labels], edge_weight=None) + first.bias
        inner = first.nn[0]  # GIN: nn((1 + eps) x_i + sum_j x_j) with nn = Linear, ReLU, Linear
        node = (table @ inner.weight.T)[labels]
        return first.nn[1:](first.propagate(adj, x=(node, node)) + (1 + first.eps) * node + inner.bias)

    def _layers(self, x: torch.Tensor, adj: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Node states after every layer (n, H); x: (n, in_dim) features, or the (V, in_dim) table with `labels`."""
        h = self.convs[0](x, adj) if labels is None else self._first_from_table(x, labels, adj)
        for conv in self.convs[1:]:
            h = conv(torch.relu(h), adj)
        return h

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (n, in_dim) node features of B concatenated graphs, or with `labels` (n,) int64 the (V, in_dim) table
        whose rows the labels index; edge_index: (2, E) symmetric, batch: (n,) graph of each node, non-decreasing
        (the PyG layout; the segment readout relies on it), num_graphs: B -> (B, H) unit embeddings
        (see `graphs.GraphBatch`)."""
        from torch_geometric.utils import segment

        n = x.shape[0] if labels is None else labels.shape[0]
        h = self._layers(x, self.propagation(edge_index, n, x.dtype), labels)
        count = torch.bincount(batch, minlength=num_graphs)
        pooled = segment(h, torch.cat([count.new_zeros(1), count.cumsum(0)]), reduce="sum")  # (B, H) node sums
        count = count.clamp_min(1).to(h.dtype)[:, None]
        if self.official_padding:
            empty = self.propagation(edge_index.new_zeros(2, 0), 1, x.dtype)
            pad = self._layers(x.new_zeros(1, x.shape[1]), empty, None)  # (1, H): what every padded slot outputs
            pooled = pooled + (count.max() - count) * pad
        return nn.functional.normalize(pooled / count, dim=-1)
