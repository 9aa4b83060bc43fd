"""IRSGS graph embeddings: equal to the official dense PyG layers, batch invariance, node-permutation invariance."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lowlabel.methods.sg_retrieval.graphs import PackedGraphs, SceneGraph, build_graph
from lowlabel.methods.sg_retrieval.model import GraphEmbedding
from lowlabel.nn.text import RandomWordEmbeddings

SMALL = build_graph("small", ["dog"], [["brown"]], [])
BIG = build_graph(
    "big", ["man", "horse", "hat", "field"], [["tall"], ["white", "running"], [], ["green"]],
    [(0, "riding", 1), (0, "wearing", 2), (1, "on", 3), (2, "on", 0)],
)
MID = build_graph("mid", ["cat", "sofa"], [["black"], []], [(0, "on", 1)])


def _model(conv: str, official: bool = False) -> GraphEmbedding:
    torch.manual_seed(0)
    model = GraphEmbedding(in_dim=16, hidden=12, conv=conv, gin_mlp_hidden=20, official_padding=official)
    for name, p in model.named_parameters():  # PyG starts GCN biases at 0; a trained model has non-zero ones
        if name.endswith("bias"):
            torch.nn.init.normal_(p, std=0.5)
    return model.eval()


def _embed(model: GraphEmbedding, graphs: list[SceneGraph]) -> torch.Tensor:
    packed = PackedGraphs(graphs)
    table = packed.label_table(RandomWordEmbeddings(16))
    with torch.no_grad():
        return model(*packed.batch(torch.arange(len(graphs)), table))


def _dense_reference(model: GraphEmbedding, graphs: list[SceneGraph], mask_padding: bool) -> torch.Tensor:
    """The official formulation: PyG DenseGCNConv / DenseGINConv on zero-padded (B, N, D) inputs built here from
    each graph's own adjacency, same weights; readout = sum over slots (padded ones too unless masked) / n."""
    from torch_geometric.nn import DenseGCNConv, DenseGINConv

    n_max = max(len(g.node_labels) for g in graphs)
    table = RandomWordEmbeddings(16)
    x = torch.zeros(len(graphs), n_max, 16)
    adj = torch.zeros(len(graphs), n_max, n_max)
    mask = torch.zeros(len(graphs), n_max, dtype=torch.bool)
    for b, g in enumerate(graphs):
        n = len(g.node_labels)
        x[b, :n] = table.embed(g.node_labels)
        adj[b, :n, :n] = torch.from_numpy(g.adjacency()).float()
        mask[b, :n] = True
    dense = []
    for conv in model.convs:
        if model.conv == "gcn":
            layer = DenseGCNConv(conv.in_channels, conv.out_channels)
        else:
            layer = DenseGINConv(copy.deepcopy(conv.nn), eps=0.0, train_eps=False)  # its init resets the MLP
        layer.load_state_dict(conv.state_dict())  # same parameter names as the sparse layer
        dense.append(layer)
    h = x
    with torch.no_grad():
        for i, layer in enumerate(dense):
            h = layer(h, adj, mask=mask if mask_padding else None)
            h = torch.relu(h) if i < len(dense) - 1 else h
        if mask_padding:
            h = h * mask[..., None]
        pooled = h.sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=1)


@pytest.mark.parametrize("official", [False, True])
@pytest.mark.parametrize("conv", ["gcn", "gin"])
def test_sparse_batches_equal_the_dense_official_layers(conv, official):
    model = _model(conv, official)
    graphs = [MID, BIG, SMALL]
    torch.testing.assert_close(_embed(model, graphs), _dense_reference(model, graphs, not official),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv", ["gcn", "gin"])
def test_vocabulary_table_input_equals_per_node_features(conv):
    model = _model(conv, official=True)
    packed = PackedGraphs([BIG, SMALL, MID])
    table, edge_index, batch, num_graphs, labels = packed.batch(torch.arange(3), packed.label_table(
        RandomWordEmbeddings(16)))
    with torch.no_grad():
        per_node = model(table[labels], edge_index, batch, num_graphs)  # the layers' own forward on (n, D) features
        from_table = model(table, edge_index, batch, num_graphs, labels)
    torch.testing.assert_close(from_table, per_node, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("conv", ["gcn", "gin"])
def test_embedding_does_not_depend_on_the_batch(conv):
    model = _model(conv)
    alone = _embed(model, [SMALL])[0]
    with_big = _embed(model, [BIG, SMALL, MID])[1]  # padded to BIG's node count
    torch.testing.assert_close(alone, with_big, atol=1e-6, rtol=1e-5)
    norms = _embed(model, [BIG, SMALL, MID]).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(3))


@pytest.mark.parametrize("conv", ["gcn", "gin"])
def test_official_padding_reproduces_the_batch_dependence(conv):
    model = _model(conv, official=True)
    alone = _embed(model, [SMALL])[0]
    with_big = _embed(model, [BIG, SMALL])[1]
    assert (alone - with_big).abs().max() > 1e-3  # the quirk the spec describes
    # one graph alone has no padding: the official and the masked readout agree
    masked = _model(conv)
    torch.testing.assert_close(alone, _embed(masked, [SMALL])[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("conv", ["gcn", "gin"])
def test_node_permutation_leaves_embedding_unchanged(conv):
    model = _model(conv)
    perm = np.random.default_rng(0).permutation(len(BIG.node_labels))
    inverse = np.argsort(perm)  # new position of old node i is inverse[i]
    shuffled = SceneGraph("big", [BIG.node_labels[p] for p in perm], inverse[BIG.edges])
    np.testing.assert_array_equal(shuffled.adjacency(), BIG.adjacency()[np.ix_(perm, perm)])
    out = _embed(model, [BIG, shuffled])
    torch.testing.assert_close(out[0], out[1], atol=1e-6, rtol=1e-5)


def test_gradients_reach_every_parameter():
    for conv in ("gcn", "gin"):
        model = _model(conv).train()
        packed = PackedGraphs([BIG, SMALL, MID])
        z = model(*packed.batch(torch.arange(3), packed.label_table(RandomWordEmbeddings(16))))
        (z[0] @ z[1]).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
