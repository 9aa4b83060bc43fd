"""CKD networks: RoI-align against a brute-force bilinear sampler and closed forms, the phrase encoder against a
step-by-step LSTM loop, grounding from features only."""

from __future__ import annotations

import math

import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.grounding_ckd.model import (
    GroundingModel,
    PhraseEncoder,
    RegionEncoder,
    RegionFeatureExtractor,
    roi_align,
)
from lowlabel.nn.resnet import resnet18


def bilinear(fmap: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's `bilinear_interpolate` for one point, all channels: fmap (C, H, W) -> (C,)."""
    _, h, w = fmap.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return torch.zeros(fmap.shape[0], dtype=fmap.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * fmap[:, y0, x0] + (1 - ly) * lx * fmap[:, y0, x1]
            + ly * (1 - lx) * fmap[:, y1, x0] + ly * lx * fmap[:, y1, x1])


def brute_roi_align(features: torch.Tensor, boxes: torch.Tensor, out: int, scale: float, s: int,
                    aligned: bool) -> torch.Tensor:
    """Loop over boxes, bins and sample points, as torchvision's CPU kernel with a fixed sampling ratio."""
    result = torch.zeros(boxes.shape[0], features.shape[1], out, out, dtype=features.dtype)
    off = 0.5 if aligned else 0.0
    for n, (b, x1, y1, x2, y2) in enumerate(boxes.tolist()):
        sx, sy, ex, ey = x1 * scale - off, y1 * scale - off, x2 * scale - off, y2 * scale - off
        rw, rh = ex - sx, ey - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / out, rh / out
        for ph in range(out):
            for pw in range(out):
                acc = torch.zeros(features.shape[1], dtype=features.dtype)
                for iy in range(s):
                    for ix in range(s):
                        acc += bilinear(features[int(b)], sy + ph * bh + (iy + 0.5) * bh / s,
                                        sx + pw * bw + (ix + 0.5) * bw / s)
                result[n, :, ph, pw] = acc / (s * s)
    return result


@pytest.mark.parametrize(("out", "scale", "s", "aligned"), [(2, 1.0, 1, True), (3, 0.5, 2, True),
                                                          (4, 0.25, 3, False), (1, 1.0, 2, False)])
def test_roi_align_matches_brute_force(out: int, scale: float, s: int, aligned: bool) -> None:
    g = torch.Generator().manual_seed(out)
    features = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    size = torch.tensor([11 / scale, 9 / scale, 11 / scale, 9 / scale], dtype=torch.float64)
    corners = torch.rand(7, 2, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2  # some boxes leave the map
    xy1, xy2 = corners.min(dim=1).values, corners.max(dim=1).values
    boxes = torch.cat([torch.tensor([0, 1, 1, 0, 1, 0, 0.0])[:, None], torch.cat([xy1, xy2], 1) * size], dim=1)
    boxes[6, 1:] = torch.tensor([3.0, 2.0, 3.0, 2.0]) / scale  # a degenerate box
    expected = brute_roi_align(features, boxes, out, scale, s, aligned)
    got = roi_align(features, boxes, (out, out), spatial_scale=scale, sampling_ratio=s, aligned=aligned)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_roi_align_closed_forms() -> None:
    h, w = 12, 16
    ramp = torch.arange(w, dtype=torch.float64).expand(1, 1, h, w).clone()  # value = column index
    boxes = torch.tensor([[0, 2.0, 3.0, 10.0, 9.0], [0, 4.5, 1.5, 7.5, 10.0]], dtype=torch.float64)
    got = roi_align(ramp, boxes, (2, 4), sampling_ratio=2)
    for n, (_, x1, _, x2, _) in enumerate(boxes.tolist()):
        centres = [x1 - 0.5 + (pw + 0.5) * (x2 - x1) / 4 for pw in range(4)]  # bin centre in pixel-index units
        torch.testing.assert_close(got[n, 0], torch.tensor([centres, centres], dtype=torch.float64))
    const = torch.full((1, 2, h, w), 3.25)
    inside = torch.tensor([[0, 1.0, 1.0, 15.0, 11.0]])
    torch.testing.assert_close(roi_align(const, inside, (3, 3)), torch.full((1, 2, 3, 3), 3.25))
    with pytest.raises(LowlabelError, match="sampling_ratio"):
        roi_align(const, inside, (3, 3), sampling_ratio=0)


def test_region_feature_extractor_pools_each_proposal() -> None:
    torch.manual_seed(0)
    backbone = resnet18(num_classes=0, width=8).eval()
    images = torch.randn(2, 3, 64, 96)
    proposals = torch.tensor([[[0.0, 0.0, 96.0, 64.0], [10.0, 5.0, 40.0, 30.0], [50.0, 20.0, 90.0, 60.0]]] * 2)
    extractor = RegionFeatureExtractor(backbone, output_size=2, sampling_ratio=2)
    with torch.no_grad():
        feats = extractor(images, proposals)
        fmap = backbone.forward_features(images)  # stride 32: 2 x 3 map
        index = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])[:, None]
        direct = roi_align(fmap, torch.cat([index, proposals.reshape(-1, 4)], 1), (2, 2), spatial_scale=1 / 32)
    assert feats.shape == (2, 3, backbone.feature_dim)
    torch.testing.assert_close(feats, direct.mean(dim=(2, 3)).view(2, 3, -1))


def test_phrase_encoder_matches_step_loop() -> None:
    torch.manual_seed(1)
    enc = PhraseEncoder(token_dim=5, lstm_dim=4, hidden_dim=6, embed_dim=3).double()
    tokens = torch.randn(3, 6, 5, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, True, False, False],   # an unknown word inside the phrase
                         [False, False, False, False, False, False],  # no known word: step 0 only
                         [True] * 6])
    cell = torch.nn.LSTMCell(5, 4).double()
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in enc.lstm.state_dict().items()})
    expected = []
    for n in range(3):
        h = c = torch.zeros(1, 4, dtype=torch.float64)
        best = None
        for t in range(6):
            x = tokens[n, t] if mask[n, t] else torch.zeros(5, dtype=torch.float64)
            h, c = cell(x[None], (h, c))
            best = h[0] if t == 0 else torch.where(mask[n, t], torch.maximum(best, h[0]), best)
        expected.append(best)
    torch.testing.assert_close(enc.pooled(tokens, mask), torch.stack(expected))
    torch.testing.assert_close(enc(tokens[None], mask[None])[0], enc.mlp(torch.stack(expected)))


def test_initialisation_follows_tensorflow_defaults() -> None:
    enc = PhraseEncoder(token_dim=300, lstm_dim=300)
    assert enc.lstm.bias_ih_l0[300:600].eq(1).all() and enc.lstm.bias_ih_l0[:300].eq(0).all()
    assert enc.lstm.bias_hh_l0.eq(0).all()
    assert enc.lstm.weight_ih_l0.abs().max() <= math.sqrt(6 / 1800)
    reg = RegionEncoder(in_dim=2048, feature_mean=0.203574, feature_std=math.sqrt(0.1843775))
    linears = [m for m in reg.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 1024), (1024, 512)]
    assert all(m.bias.eq(0).all() for m in linears)
    assert set(reg.state_dict()) >= {"feature_mean", "feature_std"}


def test_ground_uses_features_and_phrases_only() -> None:
    torch.manual_seed(2)
    model = GroundingModel(region_dim=7, token_dim=5, lstm_dim=4, hidden_dim=8, embed_dim=6)
    feats, tokens = torch.randn(2, 4, 7), torch.randn(2, 3, 2, 5)
    tmask = torch.ones(2, 3, 2, dtype=torch.bool)
    keep = torch.tensor([[True, True, True, False], [True] * 4])
    index, scores = model.ground(feats, tokens, tmask, region_mask=keep)
    region, phrase, pmask = model(feats, tokens, tmask)
    cos = torch.nn.functional.normalize(phrase, dim=-1) @ torch.nn.functional.normalize(region, dim=-1).transpose(1, 2)
    cos[0, :, 3] = -math.inf
    torch.testing.assert_close(scores, cos)
    assert torch.equal(index, cos.argmax(-1)) and pmask.all() and (index[0] != 3).all()
