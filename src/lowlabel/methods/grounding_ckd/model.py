"""CKD's networks: region encoder, phrase encoder (word vectors -> LSTM -> max over steps -> MLP), the grounding
model that joins them, and region features from a backbone by RoI-align over given proposals.

Sizes are the official ones (spec "Architecture"): both branches end in Linear(-> 1024) + ReLU -> Linear(1024 -> 512),
no dropout, no batch-norm; the LSTM has 300 hidden units. Initialisation follows TensorFlow 1's defaults used by the
official code: Glorot-uniform weights with zero biases for the dense layers, Glorot-uniform over the stacked
[input; hidden] kernel for the LSTM, and the LSTMCell forget bias of 1. The detector is not part of the model: at test
time only proposals and their features are needed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lowlabel.errors import LowlabelError
from lowlabel.methods.grounding_ckd.losses import region_phrase_scores
from lowlabel.nn.heads import mlp


def _glorot_mlp(dims: list[int]) -> nn.Sequential:
    """Linear + ReLU layers of widths `dims` (no activation after the last), Glorot-uniform weights, zero biases."""
    net = mlp(dims, norm=None, act="relu")
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


class RegionEncoder(nn.Module):
    """Region feature (..., in_dim) -> embedding (..., embed_dim), unnormalised (the scores normalise).

    The features are first standardised with one scalar mean and std (the official `_REGION_MEAN_AND_STD` table,
    e.g. 0.203574 and sqrt(0.1843775) for Flickr30K ResNet-101 features; 0 and 1 = unchanged), kept as buffers.
    """

    def __init__(self, *, in_dim: int, hidden_dim: int = 1024, embed_dim: int = 512, feature_mean: float = 0.0,
                 feature_std: float = 1.0) -> None:
        super().__init__()
        if feature_std <= 0:
            raise LowlabelError(f"feature_std={feature_std}: must be positive")
        self.register_buffer("feature_mean", torch.tensor(float(feature_mean)))
        self.register_buffer("feature_std", torch.tensor(float(feature_std)))
        self.mlp = _glorot_mlp([in_dim, hidden_dim, embed_dim])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp((features - self.feature_mean) / self.feature_std)


class PhraseEncoder(nn.Module):
    """Token vectors (N, T, token_dim) with mask (N, T) -> phrase embedding (N, embed_dim), unnormalised.

    The LSTM reads all T steps (masked tokens are zero vectors, as the official padding and unknown words); the phrase
    vector is the element-wise max of the hidden states over step 0 and every step whose mask is True (official
    `lstm_encoder.py`), then the MLP. Leading dimensions beyond N are flattened and restored.
    """

    def __init__(self, *, token_dim: int = 384, lstm_dim: int = 300, hidden_dim: int = 1024,
                 embed_dim: int = 512) -> None:
        super().__init__()
        self.lstm = nn.LSTM(token_dim, lstm_dim, batch_first=True)
        limit = math.sqrt(6.0 / (token_dim + lstm_dim + 4 * lstm_dim))  # Glorot over the (D + H, 4H) TF kernel
        for name, param in self.lstm.named_parameters():
            if name.startswith("weight"):
                nn.init.uniform_(param, -limit, limit)
            else:
                nn.init.zeros_(param)
        with torch.no_grad():  # TF LSTMCell adds forget_bias=1.0; PyTorch gate order is (i, f, g, o)
            self.lstm.bias_ih_l0[lstm_dim : 2 * lstm_dim] = 1.0
        self.mlp = _glorot_mlp([lstm_dim, hidden_dim, embed_dim])

    def pooled(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """The LSTM max-pooled phrase vector (N, lstm_dim) before the MLP."""
        if tokens.dim() != 3 or token_mask.shape != tokens.shape[:2]:
            raise LowlabelError(f"tokens {tuple(tokens.shape)} and token_mask {tuple(token_mask.shape)} must be "
                                "(N, T, D) and (N, T)")
        hidden, _ = self.lstm(tokens * token_mask[..., None].to(tokens.dtype))
        keep = token_mask.clone()
        keep[:, 0] = True
        return hidden.masked_fill(~keep[..., None], float("-inf")).max(dim=1).values

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        lead = tokens.shape[:-2]
        flat = self.pooled(tokens.reshape(-1, *tokens.shape[-2:]), token_mask.reshape(-1, token_mask.shape[-1]))
        return self.mlp(flat).reshape(*lead, -1)


class GroundingModel(nn.Module):
    """Region and phrase encoders; `forward` gives the embeddings the losses take, `ground` the chosen regions."""

    def __init__(self, *, region_dim: int, token_dim: int = 384, lstm_dim: int = 300, hidden_dim: int = 1024,
                 embed_dim: int = 512, feature_mean: float = 0.0, feature_std: float = 1.0) -> None:
        super().__init__()
        self.region = RegionEncoder(in_dim=region_dim, hidden_dim=hidden_dim, embed_dim=embed_dim,
                                    feature_mean=feature_mean, feature_std=feature_std)
        self.phrase = PhraseEncoder(token_dim=token_dim, lstm_dim=lstm_dim, hidden_dim=hidden_dim,
                                    embed_dim=embed_dim)

    def forward(self, region_feats: torch.Tensor, tokens: torch.Tensor,
                token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """region_feats (B, R, Dr), tokens (B, P, T, Dt), token_mask (B, P, T) -> region (B, R, E), phrase (B, P, E)
        embeddings and the phrase mask (B, P) (a phrase is real when it has a known token, as in official training)."""
        return self.region(region_feats), self.phrase(tokens, token_mask), token_mask.any(dim=-1)

    @torch.no_grad()
    def ground(self, region_feats: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor,
               region_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Test-time grounding from proposals' features and phrases only (no detector scores): -> (indices (B, P) of
        the best region per phrase, first on ties; cosine scores (B, P, R), padding regions at -inf)."""
        region, phrase, _ = self(region_feats, tokens, token_mask)
        scores = region_phrase_scores(region, phrase)
        if region_mask is not None:
            scores = scores.masked_fill(~region_mask[:, None, :], float("-inf"))
        return scores.argmax(dim=-1), scores


def _axis_weights(start: torch.Tensor, length: torch.Tensor, bins: int, samples: int, size: int) -> torch.Tensor:
    """(N, bins, size): per bin, the mean over its `samples` regularly placed points of their bilinear weights on the
    `size` pixels of one axis, with torchvision's border rules (a point below -1 or above `size` weighs nothing;
    points in [-1, 0] are moved to 0; the last pixel has no right neighbour)."""
    step = (torch.arange(bins * samples, device=start.device, dtype=start.dtype) + 0.5) / (bins * samples)
    pos = start[:, None] + step[None, :] * length[:, None]  # (N, bins * samples)
    inside = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.floor().clamp(max=size - 1)
    at_end = low >= size - 1
    pos = torch.where(at_end, low, pos)
    frac = pos - low
    high = torch.where(at_end, low, low + 1)
    weights = torch.zeros(*pos.shape, size, device=start.device, dtype=start.dtype)
    weights.scatter_add_(2, low.long()[..., None], ((1 - frac) * inside)[..., None])
    weights.scatter_add_(2, high.long()[..., None], (frac * inside)[..., None])
    return weights.view(pos.shape[0], bins, samples, size).mean(dim=2)


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: tuple[int, int], *,
              spatial_scale: float = 1.0, sampling_ratio: int = 2, aligned: bool = True) -> torch.Tensor:
    """RoI-align (Mask R-CNN): features (B, C, H, W), boxes (N, 5) rows (batch index, x1, y1, x2, y2) in input
    pixels -> (N, C, out_h, out_w).

    Each output bin averages `sampling_ratio`^2 bilinear samples at regular points, as torchvision's `roi_align`
    with a fixed sampling ratio (its adaptive ratio, sampling_ratio <= 0, is not supported); `aligned=True` shifts
    by half a pixel. Bilinear sampling is separable, so each box is two small interpolation matrices (rows and
    columns) applied to the feature map of its image.
    """
    if sampling_ratio < 1:
        raise LowlabelError(f"sampling_ratio={sampling_ratio}: give a fixed number of samples per bin side (>= 1)")
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise LowlabelError(f"boxes {tuple(boxes.shape)} must be (N, 5): batch index, x1, y1, x2, y2")
    out_h, out_w = output_size
    _, channels, height, width = features.shape
    rois = boxes[:, 1:].to(features.dtype) * spatial_scale - (0.5 if aligned else 0.0)
    roi_w, roi_h = rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]
    if not aligned:
        roi_w, roi_h = roi_w.clamp_min(1.0), roi_h.clamp_min(1.0)
    rows = _axis_weights(rois[:, 1], roi_h, out_h, sampling_ratio, height)  # (N, out_h, H)
    cols = _axis_weights(rois[:, 0], roi_w, out_w, sampling_ratio, width)  # (N, out_w, W)
    out = features.new_zeros(boxes.shape[0], channels, out_h, out_w)
    index = boxes[:, 0].long()
    for b in index.unique().tolist():
        sel = (index == b).nonzero().squeeze(1)
        out[sel] = torch.einsum("nph,chw,nqw->ncpq", rows[sel], features[b], cols[sel])
    return out


class RegionFeatureExtractor(nn.Module):
    """Images (B, 3, H, W) and proposals (B, R, 4) in pixels -> region features (B, R, C): RoI-align on the
    backbone's last feature map, then the mean over the output grid (the pooling of a ResNet's C5 head).

    `backbone` is a `lowlabel.nn` network with `forward_features` (e.g. `resnet50(num_classes=0)`) or any module
    returning a feature map. The feature stride is inferred as the nearest power of two of image / map width.
    """

    def __init__(self, backbone: nn.Module, *, output_size: int = 7, sampling_ratio: int = 2) -> None:
        super().__init__()
        self.backbone = backbone
        self.output_size, self.sampling_ratio = output_size, sampling_ratio

    def forward(self, images: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        if proposals.dim() != 3 or proposals.shape[0] != images.shape[0] or proposals.shape[2] != 4:
            raise LowlabelError(f"proposals {tuple(proposals.shape)} must be (B, R, 4) for {images.shape[0]} images")
        run = getattr(self.backbone, "forward_features", self.backbone)
        fmap = run(images)
        scale = 2.0 ** round(math.log2(fmap.shape[-1] / images.shape[-1]))
        batch, regions = proposals.shape[:2]
        index = torch.arange(batch, device=proposals.device, dtype=proposals.dtype).repeat_interleave(regions)
        rois = torch.cat([index[:, None], proposals.reshape(-1, 4)], dim=1)
        pooled = roi_align(fmap, rois, (self.output_size, self.output_size), spatial_scale=scale,
                           sampling_ratio=self.sampling_ratio)
        return pooled.mean(dim=(2, 3)).view(batch, regions, -1)
