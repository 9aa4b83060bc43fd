"""SGP's students: a CAPS-style 2D descriptor (ResNet U-Net, coarse-to-fine soft matching) and an FCGF-style 3D
descriptor (ResUNetBN2C layout on a sparse voxel convolution written in plain PyTorch, so it runs on CPU without
MinkowskiEngine).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lowlabel.errors import LowlabelError
from lowlabel.nn.mobilenet import STAGE_ENDS, mobilenet_v2
from lowlabel.nn.resnet import ARCHS

# --------------------------------------------------------------------------------------------------- CAPS (2D)


def _conv_bn_elu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, (k - 1) // 2), nn.BatchNorm2d(cout), nn.ELU(inplace=True))


CAPS_BACKBONES = (*sorted(ARCHS), "mobilenet_v2")
# Narrower ResNet encoders crash: with torch 2.13's oneDNN, the CPU backward of a ResNet-18 of width 4 or 8 in CAPS at
# 160 x 208 corrupts the heap (segfault / "free(): invalid size"); the run completes with oneDNN off or with layer2's
# 1x1 stride-2 downsample conv computed outside it (docs/methods/sgp.md, "Not done / open").
MIN_RESNET_WIDTH = 12


class ResUNet2D(nn.Module):
    """CAPS's feature network: an encoder giving maps at strides 4, 8 and 16; coarse map (B, coarse_dim, H/16, W/16)
    from the stride-16 map by a 1x1 conv; fine map (B, fine_dim, H/4, W/4) after two bilinear x2 up-convolutions with
    skips from the stride-8 and stride-4 maps. Convs in the head are conv + BN + ELU; the decoder widths are 8 and 4 x
    `width` (512/256 at the official 64).

    Encoders: a ResNet's conv1..layer3 (official: ResNet-50; `width` scales it, 64 = torchvision), or MobileNetV2's
    `features[:14]` (strides 4, 8, 16 end at blocks 3, 6, 13: 24, 32, 96 channels; torchvision's width 1.0, `width`
    sets the decoder only). Encoder keys are torchvision's, so ImageNet weights load into `encoder`.
    `pretrained=True` loads the offline ImageNet MobileNetV2 (`lowlabel.nn.mobilenet`); no ImageNet ResNet exists
    offline. Deviation: the official CAPS uses an ImageNet ResNet-50; MobileNetV2 is the ImageNet encoder we have.
    """

    def __init__(self, *, backbone: str = "resnet50", width: int = 64, coarse_dim: int = 128,
                 fine_dim: int = 128, pretrained: bool = False) -> None:
        super().__init__()
        if backbone not in CAPS_BACKBONES:
            raise LowlabelError(f"CAPS backbone '{backbone}' unknown; choose one of {list(CAPS_BACKBONES)}")
        if backbone != "mobilenet_v2" and width < MIN_RESNET_WIDTH:
            raise LowlabelError(f"CAPS ResNet width {width} is below {MIN_RESNET_WIDTH}: narrower encoders crash "
                                "torch's oneDNN CPU backward (heap corruption); use width >= 12")
        if pretrained and backbone != "mobilenet_v2":
            raise LowlabelError(f"no offline ImageNet weights for CAPS backbone '{backbone}'; use "
                                "backbone=mobilenet_v2 for an ImageNet-initialised student")
        self.backbone = backbone
        if backbone == "mobilenet_v2":
            self.encoder: nn.Module = mobilenet_v2(pretrained=pretrained, num_classes=0)
            self.encoder.features = self.encoder.features[:STAGE_ENDS[16] + 1]
            c1, c2, c3 = (self.encoder.features[STAGE_ENDS[s]].conv[-1].num_features for s in (4, 8, 16))
        else:
            self.encoder = ARCHS[backbone](num_classes=0, width=width)
            self.encoder.layer4 = nn.Identity()
            e = 4 if backbone == "resnet50" else 1
            c1, c2, c3 = width * e, 2 * width * e, 4 * width * e
        d3, d2 = 8 * width, 4 * width
        self.conv_coarse = _conv_bn_elu(c3, coarse_dim, 1)
        self.upconv3, self.iconv3 = _conv_bn_elu(c3, d3, 3), _conv_bn_elu(c2 + d3, d3, 3)
        self.upconv2, self.iconv2 = _conv_bn_elu(d3, d2, 3), _conv_bn_elu(c1 + d2, d2, 3)
        self.conv_fine = _conv_bn_elu(d2, fine_dim, 1)

    @staticmethod
    def _up_skip(x: torch.Tensor, up: nn.Module, skip: torch.Tensor) -> torch.Tensor:
        x = up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        x = F.pad(x, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
        return torch.cat([skip, x], dim=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W) -> the encoder's maps at strides 4, 8 and 16."""
        enc = self.encoder
        if self.backbone == "mobilenet_v2":
            x1 = enc.features[:STAGE_ENDS[4] + 1](x)
            x2 = enc.features[STAGE_ENDS[4] + 1:STAGE_ENDS[8] + 1](x1)
            return x1, x2, enc.features[STAGE_ENDS[8] + 1:](x2)
        x1 = enc.layer1(enc.maxpool(enc.relu(enc.bn1(enc.conv1(x)))))
        x2 = enc.layer2(x1)
        return x1, x2, enc.layer3(x2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W) -> coarse (B, coarse_dim, H/16, W/16), fine (B, fine_dim, H/4, W/4)."""
        x1, x2, x3 = self.encode(x)
        y = self.iconv3(self._up_skip(x3, self.upconv3, x2))
        y = self.iconv2(self._up_skip(y, self.upconv2, x1))
        return self.conv_coarse(x3), self.conv_fine(y)


def _grid(half_h: float, half_w: float, n_h: int, n_w: int, ref: torch.Tensor) -> torch.Tensor:
    """(n_h n_w, 2) points (x, y) of a regular grid over [-half_w, half_w] x [-half_h, half_h], row-major."""
    ys = torch.linspace(-half_h, half_h, n_h, dtype=ref.dtype, device=ref.device)
    xs = torch.linspace(-half_w, half_w, n_w, dtype=ref.dtype, device=ref.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).reshape(-1, 2)


def _expectation(prob: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean location (B, N, 2) and spread std = sum over x, y of sqrt(max(var, 1e-10)) (B, N); prob (B, N, S)
    over locations coords (S, 2) or (B, N, S, 2)."""
    if coords.ndim == 2:
        mean, sq = prob @ coords, prob @ coords**2
    else:
        mean, sq = (prob.unsqueeze(-1) * coords).sum(2), (prob.unsqueeze(-1) * coords**2).sum(2)
    return mean, (sq - mean**2).clamp_min(1e-10).sqrt().sum(-1)


class CAPSNet(nn.Module):
    """CAPS: for query pixels of image 1, the expected match in image 2 by softmax over correlations, coarse over
    the whole coarse map, fine within a window of +-window_size (normalised units) around the coarse nearest
    neighbour, plus the loop back to image 1 and the spreads (the inputs of `losses.caps_loss`).

    Deviation: features are sampled with grid_sample(align_corners=True), consistent with the official pixel
    normalisation ((x - (W-1)/2) / ((W-1)/2)); the official call relied on the pre-1.3 PyTorch default.
    """

    def __init__(self, *, backbone: str = "resnet50", width: int = 64, coarse_dim: int = 128, fine_dim: int = 128,
                 window_size: float = 0.125, use_nn: bool = True, pretrained: bool = False) -> None:
        super().__init__()
        self.net = ResUNet2D(backbone=backbone, width=width, coarse_dim=coarse_dim, fine_dim=fine_dim,
                             pretrained=pretrained)
        self.window_size, self.use_nn = window_size, use_nn
        self.coarse_dim, self.fine_dim = coarse_dim, fine_dim

    @staticmethod
    def normalize(coord: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Pixels (..., 2) -> [-1, 1] with centres of the corner pixels at +-1."""
        c = coord.new_tensor([(w - 1) / 2, (h - 1) / 2])
        return (coord - c) / c

    @staticmethod
    def denormalize(coord: torch.Tensor, h: int, w: int) -> torch.Tensor:
        c = coord.new_tensor([(w - 1) / 2, (h - 1) / 2])
        return coord * c + c

    @staticmethod
    def sample(fmap: torch.Tensor, coord_n: torch.Tensor) -> torch.Tensor:
        """Bilinear features (B, N, D) of fmap (B, D, h, w) at normalised points (B, N, 2)."""
        return F.grid_sample(fmap, coord_n.unsqueeze(2), align_corners=True).squeeze(-1).transpose(1, 2)

    def _global(self, feat: torch.Tensor, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Expected location, std and 1-NN location (normalised) of feat (B, N, D) over the whole fmap."""
        b, d, h, w = fmap.shape
        prob = torch.softmax(feat @ fmap.reshape(b, d, h * w), dim=-1)
        mean, std = _expectation(prob, _grid(1.0, 1.0, h, w, feat))
        idx = prob.argmax(-1)
        nn_loc = self.normalize(torch.stack([idx % w, idx // w], -1).to(feat.dtype), h, w)
        return mean, std, nn_loc

    def _window(self, feat: torch.Tensor, fmap: torch.Tensor,
                centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected location and std of feat (B, N, D) within the window around centre (B, N, 2) on fmap."""
        _, _, h, w = fmap.shape
        n_h, n_w = int(self.window_size * h), int(self.window_size * w)
        if n_h < 2 or n_w < 2:
            raise LowlabelError(f"CAPS window {self.window_size} of a {h} x {w} fine map has {n_h} x {n_w} samples; "
                                "use larger images or a larger window_size (>= 2 samples per side)")
        locs = centre.unsqueeze(2) + _grid(self.window_size, self.window_size, n_h, n_w, feat)  # (B, N, S, 2)
        win = F.grid_sample(fmap, locs, align_corners=True).permute(0, 2, 3, 1)  # (B, N, S, D)
        prob = torch.softmax((win * feat.unsqueeze(2)).sum(-1), dim=-1)
        return _expectation(prob, locs)

    def forward(self, im1: torch.Tensor, im2: torch.Tensor, coord1: torch.Tensor) -> dict[str, torch.Tensor]:
        """im1, im2 (B, 3, H, W) normalised images, coord1 (B, N, 2) query pixels (x, y) -> coord2_ec, coord2_ef,
        coord1_lc, coord1_lf (B, N, 2) pixels and std_c, std_f, std_lc, std_lf (B, N)."""
        (xc1, xf1), (xc2, xf2) = self.net(im1), self.net(im2)
        (h1, w1), (h2, w2) = im1.shape[2:], im2.shape[2:]
        c1 = self.normalize(coord1, h1, w1)
        fc1 = self.sample(xc1, c1)
        c2_ec, std_c, c2_nn = self._global(fc1, xc2)
        c2_ef, std_f = self._window(self.sample(xf1, c1), xf2, c2_nn if self.use_nn else c2_ec)
        c1_lc, std_lc, _ = self._global(self.sample(xc2, c2_ec), xc1)
        c1_lf, std_lf = self._window(self.sample(xf2, c2_ef), xf1, c1)
        return {"coord2_ec": self.denormalize(c2_ec, h2, w2), "coord2_ef": self.denormalize(c2_ef, h2, w2),
                "coord1_lc": self.denormalize(c1_lc, h1, w1), "coord1_lf": self.denormalize(c1_lf, h1, w1),
                "std_c": std_c, "std_f": std_f, "std_lc": std_lc, "std_lf": std_lf}

    def extract_features(self, im: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
        """Descriptors (B, N, coarse_dim + fine_dim) at pixels coord (B, N, 2): coarse and fine concatenated, the
        256-d descriptor the SGP teacher matches."""
        xc, xf = self.net(im)
        c = self.normalize(coord, *im.shape[2:])
        return torch.cat([self.sample(xc, c), self.sample(xf, c)], -1)


# ---------------------------------------------------------------------------------------------------- FCGF (3D)


@dataclass
class Sparse:
    """Features on occupied voxels: coords (N, 4) int64 rows (batch, x, y, z) in finest-voxel units, all multiples of
    `stride`; feats (N, C). `maps` caches neighbour tables, shared by every tensor of one forward pass."""

    coords: torch.Tensor
    feats: torch.Tensor
    stride: int = 1
    maps: dict = field(default_factory=dict)

    def with_feats(self, feats: torch.Tensor) -> Sparse:
        return Sparse(self.coords, feats, self.stride, self.maps)


def neighbour_table(src: torch.Tensor, dst: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """For each dst coordinate (M, 4) and offset (K, 3), the row of src (N, 4) at dst + offset (same batch), or N
    when that voxel is empty -> (M, K) int64. Keys are linearised coordinates looked up by binary search."""
    reach = int(offsets.abs().max()) if len(offsets) else 0
    lo = torch.minimum(src[:, 1:].min(0).values, dst[:, 1:].min(0).values) - reach
    ext = torch.maximum(src[:, 1:].max(0).values, dst[:, 1:].max(0).values) + reach - lo + 1

    def key(c: torch.Tensor) -> torch.Tensor:
        x = c[..., 1:] - lo
        return ((c[..., 0] * ext[0] + x[..., 0]) * ext[1] + x[..., 1]) * ext[2] + x[..., 2]

    keys, order = key(src).sort()
    query = dst.unsqueeze(1).clone().repeat(1, len(offsets), 1)
    query[..., 1:] += offsets
    q = key(query)
    pos = torch.searchsorted(keys, q).clamp_max(len(keys) - 1)
    return torch.where(keys[pos] == q, order[pos], torch.full_like(q, len(src)))


class SparseConv(nn.Module):
    """Sparse 3D convolution (MinkowskiEngine semantics, bias-free by default) on `Sparse` tensors.

    stride 1: outputs on the input voxels, taps at offsets o * stride, o in {-r..r}^3 (kernel 2r + 1).
    stride 2: outputs on the occupied voxels of the doubled grid floor(c / 2s) 2s, taps at c_out + o s.
    transposed (stride 2): outputs on the voxels of `target` (stride s), each gathering the coarse voxels at
    c_out - o s. Computed as one gather (N_out, K, C_in) and one matmul with the (K C_in, C_out) weight.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 transposed: bool = False, bias: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 != 1 or stride not in (1, 2) or (transposed and stride != 2):
            raise ValueError("SparseConv: odd kernel, stride 1 or 2, transposed only with stride 2")
        r = kernel_size // 2
        self.register_buffer("offsets", torch.tensor(list(itertools.product(range(-r, r + 1), repeat=3))),
                             persistent=False)
        k = len(self.offsets)
        bound = (k * in_channels) ** -0.5
        self.weight = nn.Parameter(torch.empty(k, in_channels, out_channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.stride, self.transposed, self.kernel_size = stride, transposed, kernel_size

    def forward(self, x: Sparse, target: Sparse | None = None) -> Sparse:
        s = x.stride
        if self.transposed:
            if target is None or target.stride * 2 != s:
                raise ValueError("SparseConv transposed needs the finer tensor (stride / 2) as target")
            out_coords, out_stride, offsets = target.coords, target.stride, -self.offsets * target.stride
        elif self.stride == 2:
            out_stride = 2 * s
            coarse = x.coords.clone()
            coarse[:, 1:] = torch.div(coarse[:, 1:], out_stride, rounding_mode="floor") * out_stride
            out_coords, offsets = coarse.unique(dim=0), self.offsets * s
        else:
            out_coords, out_stride, offsets = x.coords, s, self.offsets * s
        if self.kernel_size == 1 and self.stride == 1:
            out = x.feats @ self.weight[0]
        else:
            tag = (s, out_stride, self.kernel_size, self.transposed)
            if tag not in x.maps:
                x.maps[tag] = (out_coords, neighbour_table(x.coords, out_coords, offsets))
            out_coords, table = x.maps[tag]
            padded = torch.cat([x.feats, x.feats.new_zeros(1, x.feats.shape[1])])
            out = padded[table].reshape(len(table), -1) @ self.weight.reshape(-1, self.weight.shape[2])
        if self.bias is not None:
            out = out + self.bias
        return Sparse(out_coords, out, out_stride, x.maps)


class SparseBlock(nn.Module):
    """FCGF's BasicBlockBN: conv3 - BN - ReLU - conv3 - BN, plus the input, then ReLU."""

    def __init__(self, channels: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1, self.conv2 = SparseConv(channels, channels), SparseConv(channels, channels)
        self.bn1 = nn.BatchNorm1d(channels, momentum=bn_momentum)
        self.bn2 = nn.BatchNorm1d(channels, momentum=bn_momentum)

    def forward(self, x: Sparse) -> Sparse:
        y = self.conv1(x)
        y = self.conv2(y.with_feats(F.relu(self.bn1(y.feats))))
        return x.with_feats(F.relu(self.bn2(y.feats) + x.feats))


class FCGFNet(nn.Module):
    """FCGF ResUNetBN2C: four encoder levels (conv + BN + residual block; strides 1, 2, 4, 8), three transposed-conv
    decoder levels with skip concatenation, a 1x1 conv + ReLU and a final 1x1 conv with bias; unit-norm output.

    Defaults are the official ones (channels 32/64/128/256, decoder 64/64/64/128, first kernel 5, BN momentum
    0.05, 32-d output, 8.8 M parameters); narrower `channels`/`tr_channels` give a CPU-sized network.
    """

    def __init__(self, *, in_channels: int = 1, out_channels: int = 32, conv1_kernel_size: int = 5,
                 bn_momentum: float = 0.05, normalize: bool = True, channels: Sequence[int] = (32, 64, 128, 256),
                 tr_channels: Sequence[int] = (64, 64, 64, 128)) -> None:
        super().__init__()
        c, t = list(channels), list(tr_channels)
        if len(c) != 4 or len(t) != 4:
            raise ValueError("FCGFNet: channels and tr_channels need 4 widths each")

        def bn(n: int) -> nn.BatchNorm1d:
            return nn.BatchNorm1d(n, momentum=bn_momentum)

        self.enc = nn.ModuleList([SparseConv(in_channels, c[0], conv1_kernel_size)]
                                 + [SparseConv(c[k - 1], c[k], 3, stride=2) for k in (1, 2, 3)])
        self.enc_bn = nn.ModuleList([bn(n) for n in c])
        self.enc_block = nn.ModuleList([SparseBlock(n, bn_momentum) for n in c])
        ins = [c[3], c[2] + t[3], c[1] + t[2]]
        outs = [t[3], t[2], t[1]]
        self.dec = nn.ModuleList([SparseConv(i, o, 3, stride=2, transposed=True)
                                  for i, o in zip(ins, outs, strict=True)])
        self.dec_bn = nn.ModuleList([bn(n) for n in outs])
        self.dec_block = nn.ModuleList([SparseBlock(n, bn_momentum) for n in outs])
        self.conv1_tr = SparseConv(c[0] + t[1], t[0], 1)
        self.final = SparseConv(t[0], out_channels, 1, bias=True)
        self.normalize = normalize

    def forward(self, coords: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """coords (N, 4) int64 unique rows (batch, i, j, k) voxel indices, feats (N, in_channels) (all ones in
        FCGF) -> descriptors (N, out_channels), unit-norm when `normalize`."""
        if coords.ndim != 2 or coords.shape[1] != 4 or len(coords) != len(feats):
            raise LowlabelError(f"FCGFNet needs coords (N, 4) and feats (N, C); got {tuple(coords.shape)}, "
                                f"{tuple(feats.shape)}")
        if len(coords.unique(dim=0)) != len(coords):
            raise LowlabelError("FCGFNet: coords repeat a voxel; keep one point per voxel (teacher.voxel_select)")
        x = Sparse(coords.long(), feats)
        skips = []
        for conv, norm, block in zip(self.enc, self.enc_bn, self.enc_block, strict=True):
            y = conv(x)
            x = block(y.with_feats(norm(y.feats)))
            x = x.with_feats(F.relu(x.feats))
            skips.append(x)
        for k, (conv, norm, block) in enumerate(zip(self.dec, self.dec_bn, self.dec_block, strict=True)):
            y = conv(x, target=skips[2 - k])
            y = block(y.with_feats(norm(y.feats)))
            x = y.with_feats(torch.cat([F.relu(y.feats), skips[2 - k].feats], 1))
        out = self.final(x.with_feats(F.relu(self.conv1_tr(x).feats))).feats
        return F.normalize(out, dim=1) if self.normalize else out


def batch_coordinates(voxels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-cloud voxel indices (N_b, 3) into (sum N_b, 4) rows (b, i, j, k) for `FCGFNet`."""
    return torch.cat([F.pad(v.long(), (1, 0), value=b) for b, v in enumerate(voxels)])
