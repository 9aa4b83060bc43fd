"""COMPLETER networks: one autoencoder per view with softmax latents, and cross-view latent predictors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lowlabel.errors import LowlabelError
from lowlabel.nn.heads import mlp


class Autoencoder(nn.Module):
    """Per-view autoencoder of the official `model.py` (spec: Architecture).

    Encoder: Linear-BN-ReLU along [d_in, *hidden], then Linear(hidden[-1] -> d_z) and Softmax(dim=1).
    Decoder (mirror): Linear-BN-ReLU along [d_z, *reversed(hidden), d_in], BN+ReLU on the output layer too.
    """

    def __init__(self, *, d_in: int, d_z: int, hidden: Sequence[int] = (1024, 1024, 1024)) -> None:
        super().__init__()
        self.encoder = mlp([d_in, *hidden, d_z], out_act="softmax")
        self.decoder = mlp([d_z, *reversed(hidden), d_in], out_norm="bn", out_act="relu")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, d_in) -> latent (B, d_z), rows on the simplex."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, d_z) -> non-negative reconstruction (B, d_in)."""
        return self.decoder(z)


class Predictor(nn.Module):
    """Cross-view predictor G (official `Prediction`): Linear-BN-ReLU along [d_z, *hidden], mirrored back to
    hidden[0] the same way, then Linear(hidden[0] -> d_z) and Softmax(dim=1). z (B, d_z) -> (B, d_z)."""

    def __init__(self, *, d_z: int, hidden: Sequence[int] = (128, 256, 128)) -> None:
        super().__init__()
        self.net = mlp([d_z, *hidden, *list(reversed(hidden))[1:], d_z], out_act="softmax")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def pair_key(src: int, dst: int) -> str:
    """Name of the predictor from view `src` to view `dst` in `Completer.predictors`."""
    return f"{src}_to_{dst}"


class Completer(nn.Module):
    """All of COMPLETER's trainable parts for V >= 2 views: V autoencoders and V(V-1) predictors, one per ordered
    view pair (for two views: G¹ = '0_to_1' and G² = '1_to_0', as in the official code). The forward is the
    training pass on complete samples, so DDP sees every gradient-carrying computation."""

    def __init__(
        self,
        *,
        view_dims: Sequence[int],
        d_z: int,
        hidden: Sequence[int] = (1024, 1024, 1024),
        predictor_hidden: Sequence[int] = (128, 256, 128),
    ) -> None:
        super().__init__()
        if len(view_dims) < 2:
            raise LowlabelError(f"COMPLETER needs at least two views, got {len(view_dims)}")
        self.view_dims, self.d_z = list(view_dims), d_z
        self.autoencoders = nn.ModuleList(Autoencoder(d_in=d, d_z=d_z, hidden=hidden) for d in view_dims)
        self.predictors = nn.ModuleDict(
            {pair_key(s, t): Predictor(d_z=d_z, hidden=predictor_hidden)
             for s in range(len(view_dims)) for t in range(len(view_dims)) if s != t}
        )

    @property
    def n_views(self) -> int:
        return len(self.view_dims)

    def forward(
        self, xs: Sequence[torch.Tensor], predict: bool = True
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, torch.Tensor]]:
        """xs: one (B, d_v) tensor per view, all views present -> (latents [(B, d_z)] per view, reconstructions
        [(B, d_v)] per view, predictions {pair_key(s, t): G_{s->t}(z_s) (B, d_z)}, empty unless `predict`)."""
        zs = [ae.encode(x) for ae, x in zip(self.autoencoders, xs, strict=True)]
        x_hats = [ae.decode(z) for ae, z in zip(self.autoencoders, zs, strict=True)]
        preds = {key: g(zs[int(key.split("_")[0])]) for key, g in self.predictors.items()} if predict else {}
        return zs, x_hats, preds

    @torch.no_grad()
    def embed(self, xs: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Fused latents of all samples with missing views imputed (official `evaluation`; call in eval mode).

        xs: one (n, d_v) tensor per view (rows of missing views are ignored); mask: (n, V) 0/1, every row has a 1.
        A present view v gives z^v = enc^v(x^v); a missing view t gets the mean over present views s of
        G_{s->t}(z^s) (for two views exactly the official imputation). Returns concat_v z^v: (n, V * d_z).
        """
        present = mask.bool()
        zs = [ae.encode(x) for ae, x in zip(self.autoencoders, xs, strict=True)]
        fused = []
        for t in range(self.n_views):
            imputed = torch.zeros_like(zs[t])
            for s in range(self.n_views):
                if s != t:
                    imputed += present[:, s : s + 1] * self.predictors[pair_key(s, t)](zs[s])
            imputed /= present.sum(dim=1, keepdim=True).clamp_min(1)  # present views only (t itself is missing)
            fused.append(torch.where(present[:, t : t + 1], zs[t], imputed))
        return torch.cat(fused, dim=1)
