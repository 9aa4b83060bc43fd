"""FDRL head against per-branch, per-pair loop references (the unofficial code's layout) and its invariants."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lowlabel.errors import LowlabelError
from lowlabel.methods.fdrl.losses import fdrl_loss
from lowlabel.methods.fdrl.model import (
    FDRL,
    BranchLinear,
    FDRLHead,
    InterRelation,
    MLPHead,
    fdrl_head_size,
    intra_relation,
    matched_mlp_width,
    mlp_size,
    relation_weights,
)


def branch_linear(layer: BranchLinear, j: int) -> nn.Linear:
    """Branch j of a BranchLinear as a separate nn.Linear (the per-branch layout of the unofficial code)."""
    _, out, inp = layer.weight.shape
    lin = nn.Linear(inp, out).double()
    with torch.no_grad():
        lin.weight.copy_(layer.weight[j])
        lin.bias.copy_(layer.bias[j])
    return lin


def reference_relation(g: torch.Tensor, relation: str) -> torch.Tensor:
    n, m, _ = g.shape
    out = torch.zeros(n, m, m, dtype=g.dtype)
    for i in range(n):
        for j in range(m):
            for k in range(m):
                if j == k:
                    continue
                if relation == "tanh_distance":
                    s = math.sqrt(sum((a - b) ** 2 for a, b in zip(g[i, j].tolist(), g[i, k].tolist(), strict=True)))
                else:
                    s = torch.nn.functional.cosine_similarity(g[i, j], g[i, k], dim=0).item()
                out[i, j, k] = math.tanh(s)
    return out


@pytest.mark.parametrize(("n", "m", "d"), [(1, 1, 1), (3, 9, 16), (5, 4, 7)])
def test_intra_relation_matches_per_branch_linear(n: int, m: int, d: int) -> None:
    g = torch.Generator().manual_seed(n + m + d)
    latent = torch.randn(n, m, d, generator=g, dtype=torch.float64).relu()
    weight = torch.randn(m, d, d, generator=g, dtype=torch.float64)
    bias = torch.randn(m, d, generator=g, dtype=torch.float64)
    alphas, reweighted = intra_relation(latent, weight, bias)
    assert alphas.shape == (n, m) and reweighted.shape == (n, m, d)
    for j in range(m):
        gate = torch.sigmoid(latent[:, j] @ weight[j].T + bias[j])
        alpha = torch.linalg.vector_norm(gate, ord=1, dim=1)
        torch.testing.assert_close(alphas[:, j], alpha)
        torch.testing.assert_close(reweighted[:, j], alpha[:, None] * latent[:, j])
    # alphas in (0, D) for moderate inputs, in [0, D] even when the sigmoids saturate (float32)
    assert ((alphas > 0) & (alphas < d)).all()
    big, _ = intra_relation(1e4 * latent.float(), 1e2 * weight.float(), bias.float())
    assert ((big >= 0) & (big <= d)).all()


def test_alpha_of_zero_gate_input_is_half_d() -> None:
    alphas, _ = intra_relation(torch.randn(2, 3, 8), torch.zeros(3, 8, 8), torch.zeros(3, 8))
    torch.testing.assert_close(alphas, torch.full((2, 3), 4.0))


@pytest.mark.parametrize("relation", ["tanh_distance", "tanh_cosine"])
@pytest.mark.parametrize(("n", "m", "d"), [(2, 3, 4), (1, 9, 8)])
def test_relation_weights_match_pair_loop(relation: str, n: int, m: int, d: int) -> None:
    g = torch.randn(n, m, d, generator=torch.Generator().manual_seed(m), dtype=torch.float64).relu()
    w = relation_weights(g, relation)
    torch.testing.assert_close(w, reference_relation(g, relation))
    assert (w.diagonal(dim1=1, dim2=2) == 0).all()
    torch.testing.assert_close(w, w.transpose(1, 2))
    assert ((w >= 0) & (w < 1)).all()


def test_distance_relation_has_finite_gradient_for_equal_nodes() -> None:
    g = torch.zeros(2, 4, 3, dtype=torch.float64)
    g[:, 0] = 1.0  # nodes 1..3 coincide (all zero), as ReLU nodes often do
    g.requires_grad_(True)
    relation_weights(g, "tanh_distance").sum().backward()
    assert torch.isfinite(g.grad).all()
    # d/dg of Σ tanh(‖g_0 − g_k‖) over both orders: 2·3·(1 − tanh²(√3))·(1/√3) per entry of node 0
    expected = 6 * (1 - math.tanh(math.sqrt(3)) ** 2) / math.sqrt(3)
    torch.testing.assert_close(g.grad[:, 0], torch.full((2, 3), expected, dtype=torch.float64))


@pytest.mark.parametrize("skip", ["intra", "message"])
@pytest.mark.parametrize("relation", ["tanh_distance", "tanh_cosine"])
def test_inter_relation_matches_loop(skip: str, relation: str) -> None:
    n, m, d, delta = 3, 4, 5, 0.3
    torch.manual_seed(0)
    inter = InterRelation(num_latent=m, latent_dim=d, relation=relation, delta=delta, skip=skip).double()
    f = torch.randn(n, m, d, dtype=torch.float64).relu()
    g = torch.stack([branch_linear(inter.message, j)(f[:, j]).relu() for j in range(m)], dim=1)
    omega = reference_relation(g, relation)
    kept = f if skip == "intra" else g
    expected = torch.zeros(n, m, d, dtype=torch.float64)
    for i in range(n):
        for j in range(m):
            expected[i, j] = delta * kept[i, j] + (1 - delta) * sum(omega[i, j, k] * g[i, k] for k in range(m))
    torch.testing.assert_close(inter(f), expected)


def test_head_matches_per_branch_forward() -> None:
    torch.manual_seed(1)
    n, p, m, d, c = 4, 10, 3, 6, 5
    head = FDRLHead(p, c, num_latent=m, latent_dim=d).double()
    x = torch.randn(n, p, dtype=torch.float64)
    out = head(x)
    latent = torch.stack([branch_linear(head.fdn.branches, j)(x).relu() for j in range(m)], dim=1)
    gates = torch.stack([torch.sigmoid(branch_linear(head.intra.gate, j)(latent[:, j])) for j in range(m)], dim=1)
    alphas = gates.abs().sum(dim=2)
    f = alphas[..., None] * latent
    y = head.inter(f).sum(dim=1)
    torch.testing.assert_close(out.latent, latent)
    torch.testing.assert_close(out.alphas, alphas)
    torch.testing.assert_close(out.weights, alphas / alphas.sum(dim=1, keepdim=True))
    torch.testing.assert_close(out.weights.sum(dim=1), torch.ones(n, dtype=torch.float64))
    torch.testing.assert_close(out.feature, y)
    torch.testing.assert_close(out.logits, y @ head.epn.weight.T + head.epn.bias)


def test_parameter_count_matches_the_spec() -> None:
    head = FDRLHead(512, 7)
    count = {name: sum(p.numel() for p in mod.parameters()) for name, mod in
             [("fdn", head.fdn), ("intra", head.intra), ("inter", head.inter), ("epn", head.epn)]}
    assert count == {"fdn": 590_976, "intra": 148_608, "inter": 148_608, "epn": 903}
    assert head.latent_centres.shape == (9, 128) and head.class_centres.shape == (7, 9)


@pytest.mark.parametrize(("relation", "skip", "balance"), [("tanh_distance", "intra", "normalised"),
                                                           ("tanh_cosine", "message", "raw")])
def test_every_parameter_gets_a_gradient_from_the_total_loss(relation: str, skip: str, balance: str) -> None:
    torch.manual_seed(2)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())  # a (N, P, H, W) map, pooled by FDRL
    model = FDRL(backbone, FDRLHead(8, 3, num_latent=4, latent_dim=6, relation=relation, skip=skip))
    images = torch.randn(6, 3, 5, 5)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(images)
    losses = fdrl_loss(out.logits, labels, out.latent, out.alphas, model.head.latent_centres,
                       model.head.class_centres, balance=balance)
    losses["total"].backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_head_takes_any_feature_size_and_rejects_bad_settings() -> None:
    for p in (1, 37, 2048):
        assert FDRLHead(p, 2, num_latent=2, latent_dim=3)(torch.randn(2, p)).logits.shape == (2, 2)
    with pytest.raises(LowlabelError, match="relation"):
        FDRLHead(4, 2, relation="gaussian")
    with pytest.raises(LowlabelError, match="skip"):
        FDRLHead(4, 2, skip="none")
    with pytest.raises(LowlabelError, match="delta"):
        FDRLHead(4, 2, delta=1.5)
    with pytest.raises(LowlabelError, match="BranchLinear"):
        FDRLHead(4, 2)(torch.randn(2, 5))
    with pytest.raises(LowlabelError, match="intra_relation"):
        intra_relation(torch.zeros(2, 3, 4), torch.zeros(3, 4, 5), torch.zeros(3, 4))


def test_state_dict_round_trip() -> None:
    head = FDRLHead(6, 3, num_latent=2, latent_dim=4)
    with torch.no_grad():
        head.class_centres.add_(1.0)
    other = FDRLHead(6, 3, num_latent=2, latent_dim=4)
    other.load_state_dict(head.state_dict())
    x = torch.randn(3, 6)
    torch.testing.assert_close(other(x).logits, head(x).logits)
    torch.testing.assert_close(other.class_centres, head.class_centres)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_fdrl_head_size_is_the_spec_count_and_the_modules() -> None:
    assert fdrl_head_size(512, 7) == 590_976 + 148_608 + 148_608 + 903 + 9 * 128 + 7 * 9  # spec, plus the centres
    for p, c, m, d in [(128, 7, 9, 32), (5, 3, 2, 4)]:
        assert fdrl_head_size(p, c, num_latent=m, latent_dim=d) == _count(FDRLHead(p, c, num_latent=m, latent_dim=d))


@pytest.mark.parametrize(("p", "c", "hidden", "layers"), [(128, 7, 140, 3), (5, 3, 4, 1), (9, 2, 6, 2)])
def test_mlp_head_is_a_relu_mlp_of_the_counted_size(p: int, c: int, hidden: int, layers: int) -> None:
    head = MLPHead(p, c, hidden=hidden, layers=layers)
    assert mlp_size(p, c, hidden, layers) == _count(head)
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.Linear, nn.ReLU] * layers + [nn.Linear]
    x = torch.randn(4, p)
    out = head(x)
    assert out.logits.shape == (4, c) and out.class_centres is None and torch.equal(out.feature, x)
    with pytest.raises(LowlabelError, match="MLPHead"):
        MLPHead(p, c, hidden=0)


@pytest.mark.parametrize(("p", "c", "layers"), [(128, 7, 3), (512, 7, 3), (16, 3, 1)])
def test_matched_mlp_width_is_the_closest_by_brute_force(p: int, c: int, layers: int) -> None:
    target = fdrl_head_size(p, c, num_latent=9, latent_dim=32)
    best = min(range(1, 5000), key=lambda h: abs(mlp_size(p, c, h, layers) - target))
    assert matched_mlp_width(p, c, target, layers) == best
