"""FDRL's head on any pooled backbone feature: FDN, FRN (Intra-RM + Inter-RM) and EPN (spec "Architecture").

Notation: N images, P backbone feature size, M latent features (branches), D latent size, C classes.
- FDN: l_ij = ReLU(W_dj x_i + b_dj) ∈ R^D, M independent branches (spec Architecture 2).
- Intra-RM: α_ij = ‖sigmoid(W_sj l_ij + b_sj)‖₁ ∈ (0, D), f_ij = α_ij · l_ij (spec Architecture 3, `intra_relation`).
- Inter-RM: node features g_ij = ReLU(W_ej f_ij + b_ej) (one FC per node), relation weights ω_i(j, k) between
  nodes j ≠ k (ω_i(j, j) = 0), f̂_ij = Σ_k ω_i(j, k) g_ik, y_ij = δ f_ij + (1 − δ) f̂_ij (the paper's form; the
  unofficial code uses δ g_ij: `skip="message"`). The paper does not pin ω: `relation_weights` names the choices.
- EPN: logits = W_p Σ_j y_ij + b_p.
`LinearHead` is the baselines' head (a plain linear classifier, optionally with the class centres of a centre loss);
`MLPHead` the capacity control (a ReLU MLP of the FDRL head's depth and parameter count, `matched_mlp_width`);
`FDRL` puts any of them on a backbone. Heads return their loss centres with their outputs, so a training step
reaches every parameter through the model's forward (as DistributedDataParallel needs).
Every per-branch layer is one batched (M, out, in) weight in torch Linear layout, so branch j of this module holds
the same numbers as an `nn.Linear` of the unofficial per-branch code would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lowlabel.errors import LowlabelError
from lowlabel.methods.fdrl.losses import normalise_weights
from lowlabel.nn.heads import mlp

RELATIONS: tuple[str, ...] = ("tanh_distance", "tanh_cosine")
SKIPS: tuple[str, ...] = ("intra", "message")


class BranchLinear(nn.Module):
    """M independent Linear layers in one (M, out, in) weight and (M, out) bias (torch Linear layout per branch).

    forward: x (N, in), shared by all branches, or (N, M, in), one input per branch -> (N, M, out).
    Initialised like `nn.Linear` (uniform ±1/√in for weight and bias), from the global RNG.
    """

    def __init__(self, branches: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(branches, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(branches, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, out, inp = self.weight.shape
        if x.ndim == 2 and x.shape[1] == inp:
            return F.linear(x, self.weight.reshape(m * out, inp), self.bias.reshape(-1)).view(-1, m, out)
        if x.ndim == 3 and x.shape[1:] == (m, inp):
            return torch.einsum("nmi,moi->nmo", x, self.weight) + self.bias
        raise LowlabelError(f"BranchLinear({m} branches, {inp} -> {out}) got input {tuple(x.shape)}; expected "
                            f"(N, {inp}) or (N, {m}, {inp})")


def intra_relation(latent: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intra-feature relation weights and intra-aware features (spec Architecture 3, Intra-RM).

    latent: (N, M, D) latent features l_ij; weight: (M, D, D) per-branch W_sj in torch Linear layout (out, in);
    bias: (M, D). Returns alphas (N, M), α_ij = ‖sigmoid(W_sj l_ij + b_sj)‖₁ ∈ (0, D) (the L1 norm of a positive
    vector is its sum), and the reweighted latent f_ij = α_ij · l_ij, (N, M, D).
    """
    if latent.ndim != 3 or weight.shape != (latent.shape[1], latent.shape[2], latent.shape[2]) \
            or bias.shape != latent.shape[1:]:
        raise LowlabelError(f"intra_relation needs latent (N, M, D), weight (M, D, D), bias (M, D), got "
                            f"{tuple(latent.shape)}, {tuple(weight.shape)}, {tuple(bias.shape)}")
    gates = torch.sigmoid(torch.einsum("nmi,moi->nmo", latent, weight) + bias)
    alphas = gates.sum(dim=2)
    return alphas, alphas.unsqueeze(2) * latent


def _pairwise_distance(nodes: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (N, M, M) between the M rows of each image, with a zero (not NaN) gradient where two
    rows coincide (ReLU nodes often do: e.g. two all-zero rows)."""
    sq = (nodes.unsqueeze(2) - nodes.unsqueeze(1)).pow(2).sum(dim=3)
    positive = sq > 0
    return torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def relation_weights(nodes: torch.Tensor, relation: str = "tanh_distance") -> torch.Tensor:
    """Inter-feature relation weights ω_i(j, k) (N, M, M) of node features (N, M, D), zero on the diagonal.

    The paper computes ω from the two node features through tanh without pinning the function; choices:
    - "tanh_distance": ω(j, k) = tanh(‖g_ij − g_ik‖₂) (the unofficial re-implementation's reading, the default);
    - "tanh_cosine": ω(j, k) = tanh(cos(g_ij, g_ik)) (a similarity reading: alike nodes exchange more).
    """
    if nodes.ndim != 3:
        raise LowlabelError(f"relation_weights needs node features (N, M, D), got {tuple(nodes.shape)}")
    if relation == "tanh_distance":
        raw = _pairwise_distance(nodes)
    elif relation == "tanh_cosine":
        unit = F.normalize(nodes, dim=2)
        raw = unit @ unit.transpose(1, 2)
    else:
        raise LowlabelError(f"relation='{relation}' is not an Inter-RM relation; use one of {', '.join(RELATIONS)}")
    off_diagonal = 1.0 - torch.eye(nodes.shape[1], dtype=nodes.dtype, device=nodes.device)
    return torch.tanh(raw) * off_diagonal


class FeatureDecomposition(nn.Module):
    """FDN: x (N, P) -> latent l (N, M, D) = ReLU of M independent FC branches."""

    def __init__(self, in_features: int, *, num_latent: int = 9, latent_dim: int = 128) -> None:
        super().__init__()
        self.branches = BranchLinear(num_latent, in_features, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branches(x))


class IntraRelation(nn.Module):
    """Intra-RM: latent (N, M, D) -> (alphas (N, M), intra-aware features (N, M, D)); see `intra_relation`."""

    def __init__(self, *, num_latent: int = 9, latent_dim: int = 128) -> None:
        super().__init__()
        self.gate = BranchLinear(num_latent, latent_dim, latent_dim)

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return intra_relation(latent, self.gate.weight, self.gate.bias)


class InterRelation(nn.Module):
    """Inter-RM: intra-aware features f (N, M, D) -> importance-aware features y (N, M, D).

    g = ReLU(per-node FC(f)); ω = `relation_weights(g, relation)`; f̂ = ω g; y = δ·s + (1 − δ)·f̂ with s = f
    (`skip="intra"`, the paper's equation) or s = g (`skip="message"`, the unofficial code). δ = `delta` (0.5).
    """

    def __init__(self, *, num_latent: int = 9, latent_dim: int = 128, relation: str = "tanh_distance",
                 delta: float = 0.5, skip: str = "intra") -> None:
        super().__init__()
        if relation not in RELATIONS:
            raise LowlabelError(f"relation='{relation}' is not an Inter-RM relation; use one of {', '.join(RELATIONS)}")
        if skip not in SKIPS:
            raise LowlabelError(f"skip='{skip}' is not an Inter-RM skip input; use one of {', '.join(SKIPS)}")
        if not 0.0 <= delta <= 1.0:
            raise LowlabelError(f"delta={delta}: the balance parameter δ must lie in [0, 1]")
        self.message = BranchLinear(num_latent, latent_dim, latent_dim)
        self.relation, self.delta, self.skip = relation, delta, skip

    def forward(self, intra: torch.Tensor) -> torch.Tensor:
        nodes = F.relu(self.message(intra))
        mixed = relation_weights(nodes, self.relation) @ nodes
        kept = intra if self.skip == "intra" else nodes
        return self.delta * kept + (1.0 - self.delta) * mixed


@dataclass
class FDRLOutput:
    """What the head returns: logits (N, C); latent l (N, M, D); alphas (N, M) raw α_ij; weights (N, M) the alphas
    normalised per image (rows sum to 1); feature (N, D) the expression feature y_i = Σ_j y_ij; the head's loss
    centres c (M, D) and w̃ (C, M) (the parameters themselves)."""

    logits: torch.Tensor
    latent: torch.Tensor
    alphas: torch.Tensor
    weights: torch.Tensor
    feature: torch.Tensor
    latent_centres: torch.Tensor | None = None
    class_centres: torch.Tensor | None = None


class FDRLHead(nn.Module):
    """FDN + FRN + EPN on a pooled feature x (N, P), with the learnable loss centres as parameters.

    `latent_centres` (M, D), the c_j of L_C, start at 0 (unofficial: randn, which a ReLU latent cannot reach in its
    negative entries); `class_centres` (C, M), the w̃_k of L_D, start at D/2, the alpha of a zero gate input
    (unofficial: randn, ~D/2 away from every alpha, which Adam at lr 1e-4 closes at ~1e-4 per step).
    `epn_init_scale` multiplies the EPN's default-initialised weight (and zeroes its bias) when not 1: the paper does
    not give the initialisation, and y_i = Σ_j y_ij with α_ij ≈ D/2 makes default-initialised logits ~50 at step 0.
    """

    def __init__(self, in_features: int, num_classes: int, *, num_latent: int = 9, latent_dim: int = 128,
                 relation: str = "tanh_distance", delta: float = 0.5, skip: str = "intra",
                 epn_init_scale: float = 1.0) -> None:
        super().__init__()
        if min(in_features, num_classes, num_latent, latent_dim) < 1 or epn_init_scale <= 0:
            raise LowlabelError(f"FDRLHead sizes must be positive: in_features={in_features}, num_classes="
                                f"{num_classes}, num_latent={num_latent}, latent_dim={latent_dim}, "
                                f"epn_init_scale={epn_init_scale}")
        self.fdn = FeatureDecomposition(in_features, num_latent=num_latent, latent_dim=latent_dim)
        self.intra = IntraRelation(num_latent=num_latent, latent_dim=latent_dim)
        self.inter = InterRelation(num_latent=num_latent, latent_dim=latent_dim, relation=relation, delta=delta,
                                   skip=skip)
        self.epn = nn.Linear(latent_dim, num_classes)
        if epn_init_scale != 1.0:  # y_i sums M features scaled by α ≈ D/2: default-initialised logits are ~50
            with torch.no_grad():
                self.epn.weight.mul_(epn_init_scale)
                self.epn.bias.zero_()
        self.latent_centres = nn.Parameter(torch.zeros(num_latent, latent_dim))
        self.class_centres = nn.Parameter(torch.full((num_classes, num_latent), latent_dim / 2.0))

    def forward(self, x: torch.Tensor) -> FDRLOutput:
        latent = self.fdn(x)
        alphas, intra = self.intra(latent)
        feature = self.inter(intra).sum(dim=1)
        return FDRLOutput(self.epn(feature), latent, alphas, normalise_weights(alphas), feature,
                          self.latent_centres, self.class_centres)


@dataclass
class LinearOutput:
    """What `LinearHead` returns: logits (N, C), the pooled feature x (N, P) it classified, and the class centres
    (C, P) of the centre loss (None without them)."""

    logits: torch.Tensor
    feature: torch.Tensor
    class_centres: torch.Tensor | None = None


class LinearHead(nn.Module):
    """The baselines' head on a pooled feature x (N, P): logits = W x + b (EPN alone, no decomposition).

    With `centres=True` it also owns learnable class centres (C, P), starting at 0, for the centre loss on x (Wen et
    al., ECCV 2016) of the "backbone + centre loss" baseline; they are optimised with the network, like FDRL's.
    """

    def __init__(self, in_features: int, num_classes: int, *, centres: bool = False) -> None:
        super().__init__()
        if min(in_features, num_classes) < 1:
            raise LowlabelError(f"LinearHead sizes must be positive: in_features={in_features}, "
                                f"num_classes={num_classes}")
        self.fc = nn.Linear(in_features, num_classes)
        self.class_centres = nn.Parameter(torch.zeros(num_classes, in_features)) if centres else None

    def forward(self, x: torch.Tensor) -> LinearOutput:
        return LinearOutput(self.fc(x), x, self.class_centres)


def fdrl_head_size(in_features: int, num_classes: int, *, num_latent: int = 9, latent_dim: int = 128) -> int:
    """Number of parameters of an `FDRLHead` (loss centres included): FDN M(PD + D), Intra-RM and Inter-RM
    M(D² + D) each, EPN DC + C, centres MD + CM (spec "Architecture", parameter count)."""
    m, d = num_latent, latent_dim
    return m * (in_features * d + d) + 2 * m * (d * d + d) + d * num_classes + num_classes + m * d + num_classes * m


def mlp_size(in_features: int, num_classes: int, hidden: int, layers: int) -> int:
    """Number of parameters of an `MLPHead`: `layers` hidden Linear layers of width `hidden`, then the classifier."""
    return in_features * hidden + hidden + (layers - 1) * (hidden * hidden + hidden) + hidden * num_classes \
        + num_classes


def matched_mlp_width(in_features: int, num_classes: int, target: int, layers: int) -> int:
    """The hidden width whose `MLPHead` of `layers` hidden layers has the parameter count closest to `target`."""
    hidden = 1
    while mlp_size(in_features, num_classes, hidden + 1, layers) <= target:
        hidden += 1
    above = mlp_size(in_features, num_classes, hidden + 1, layers)
    return hidden + 1 if above - target < target - mlp_size(in_features, num_classes, hidden, layers) else hidden


class MLPHead(nn.Module):
    """The capacity control for FDRL's head on a pooled feature x (N, P): `layers` hidden Linear + ReLU layers of
    width `hidden`, then a linear classifier. FDRL's head has three hidden layers per branch (FDN, the Intra-RM gate,
    the Inter-RM message) and no normalisation; the demo gives this head three hidden layers, no normalisation, and
    the FDRL head's parameter count (`matched_mlp_width`), so the comparison separates the decomposition from depth
    and size."""

    def __init__(self, in_features: int, num_classes: int, *, hidden: int, layers: int = 3) -> None:
        super().__init__()
        if min(in_features, num_classes, hidden, layers) < 1:
            raise LowlabelError(f"MLPHead sizes must be positive: in_features={in_features}, num_classes="
                                f"{num_classes}, hidden={hidden}, layers={layers}")
        self.net = mlp([in_features, *[hidden] * layers, num_classes], norm=None, act="relu")

    def forward(self, x: torch.Tensor) -> LinearOutput:
        return LinearOutput(self.net(x), x)


class FDRL(nn.Module):
    """A backbone followed by the FDRL head (or a baseline's `LinearHead` / `MLPHead`): images -> the head's output.

    `backbone` maps images to a pooled (N, P) feature, or to a (N, P, H, W) map, which is globally average-pooled
    (as the paper's ResNet-18 conv stages + GAP). An `nn.Identity` backbone takes precomputed features (N, P).
    """

    def __init__(self, backbone: nn.Module, head: FDRLHead | LinearHead | MLPHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor) -> FDRLOutput | LinearOutput:
        feats = self.backbone(images)
        if feats.ndim == 4:
            feats = feats.mean(dim=(2, 3))
        return self.head(feats)
