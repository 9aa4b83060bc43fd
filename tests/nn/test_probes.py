"""lowlabel.nn.probes: exact upsampled-pixel features, backbone maps as a plain forward, probes on separable
features and on noise, a deterministic linear fit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lowlabel.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lowlabel.nn.probes import backbone_maps, class_probe, fit_linear, segmentation_probe, upsampled_pixels
from lowlabel.nn.resnet import resnet18


@pytest.mark.parametrize(("h", "size"), [(4, 32), (8, 64), (3, 10), (5, 5)])
def test_upsampled_pixels_equal_interpolate_at_those_pixels(h: int, size: int) -> None:
    maps = torch.randn(3, 6, h, h, generator=torch.Generator().manual_seed(h), dtype=torch.float64)
    feats, index = upsampled_pixels(maps, (size, size), per_image=min(17, size * size), seed=1)
    full = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False).flatten(2)  # (N, C, H*W)
    expected = full.gather(2, index[:, None, :].expand(-1, 6, -1)).permute(0, 2, 1).reshape(-1, 6)
    torch.testing.assert_close(feats, expected)
    assert all(len(set(row.tolist())) == index.shape[1] for row in index)  # distinct pixels per image


def test_upsampled_pixels_leave_the_global_generator_alone() -> None:
    state = torch.get_rng_state()
    upsampled_pixels(torch.zeros(2, 3, 4, 4), (8, 8), per_image=5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_backbone_maps_are_the_eval_forward_of_normalised_images_in_any_chunking() -> None:
    net = resnet18(num_classes=0, small_stem=True, width=8)
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    net.train()
    maps = backbone_maps(net, images, batch_size=2)
    assert net.training  # the caller's mode comes back
    with torch.no_grad():
        expected = net.eval().forward_features((images.float() / 255.0 - mean) / std)
    torch.testing.assert_close(maps, expected)
    assert maps.shape == (5, net.feature_dim, 2, 2) and not maps.requires_grad
    torch.testing.assert_close(backbone_maps(net, images, batch_size=256), maps)


def test_fit_linear_is_deterministic_and_separates_separable_data() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=g)
    x = F.one_hot(y, 4).double() * 3 + 0.3 * torch.randn(200, 4, generator=g, dtype=torch.float64)
    a, b = fit_linear(x, y, 4), fit_linear(x, y, 4)
    assert torch.equal(a.weight, b.weight)
    assert (a(x).argmax(1) == y).all()
    assert not a.weight.requires_grad


def test_probes_are_perfect_on_features_that_encode_the_labels_and_chance_on_noise() -> None:
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 3, (40, 1, 4, 4), generator=g).repeat_interleave(2, 2).repeat_interleave(2, 3)[:, 0]
    maps = F.one_hot(masks, 3).permute(0, 3, 1, 2).float() + 0.05 * torch.randn(40, 3, 8, 8, generator=g)
    assert segmentation_probe(maps[:30], masks[:30], maps[30:], masks[30:], 3, pixels_per_image=32) == 1.0
    labels = masks.flatten(1).mode(1).values
    pooled = F.one_hot(labels, 3).float()[:, :, None, None].expand(-1, -1, 2, 2).contiguous()
    assert class_probe(pooled[:30], labels[:30], pooled[30:], labels[30:], 3) == 1.0
    noise = torch.randn(400, 8, 1, 1, generator=g)
    random_labels = torch.randint(0, 4, (400,), generator=g)
    assert class_probe(noise[:300], random_labels[:300], noise[300:], random_labels[300:], 4) < 0.45


def test_segmentation_probe_upsamples_low_resolution_maps_to_the_masks() -> None:
    # 4x4 maps, 8x8 masks: each map cell covers a 2x2 block; the logits are upsampled bilinearly, so only pixels at
    # block borders can be wrong; blocks of one class per 2x2-cell quadrant make every pixel unambiguous.
    g = torch.Generator().manual_seed(1)
    quadrants = torch.randint(0, 2, (24, 1, 2, 2), generator=g)
    masks = quadrants.repeat_interleave(4, 2).repeat_interleave(4, 3)[:, 0]  # (24, 8, 8)
    maps = F.one_hot(quadrants[:, 0].repeat_interleave(2, 1).repeat_interleave(2, 2), 2).permute(0, 3, 1, 2).float()
    miou = segmentation_probe(maps[:16], masks[:16], maps[16:], masks[16:], 2, pixels_per_image=64)
    assert miou > 0.85
