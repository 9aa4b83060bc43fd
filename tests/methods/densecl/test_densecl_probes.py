"""The demo's frozen-feature probes: exact upsampled-pixel features, mIoU by hand, probes on separable features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lowlabel.methods.densecl.probes import (
    class_probe,
    confusion_miou,
    fit_linear,
    segmentation_probe,
    upsampled_pixels,
)


@pytest.mark.parametrize(("h", "size"), [(4, 32), (8, 64), (3, 10), (5, 5)])
def test_upsampled_pixels_equal_interpolate_at_those_pixels(h: int, size: int) -> None:
    maps = torch.randn(3, 6, h, h, generator=torch.Generator().manual_seed(h), dtype=torch.float64)
    feats, index = upsampled_pixels(maps, (size, size), per_image=min(17, size * size), seed=1)
    full = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False).flatten(2)  # (N, C, H*W)
    expected = full.gather(2, index[:, None, :].expand(-1, 6, -1)).permute(0, 2, 1).reshape(-1, 6)
    torch.testing.assert_close(feats, expected)
    assert all(len(set(row.tolist())) == index.shape[1] for row in index)  # distinct pixels per image


def test_confusion_miou_by_hand() -> None:
    target = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    # class 0: TP 2, FP 0, FN 1 -> 2/3; class 1: TP 1, FP 1, FN 1 -> 1/3; class 2: TP 1, FP 1, FN 0 -> 1/2;
    # class 3 is absent from both and does not count.
    assert confusion_miou(pred, target, 4) == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert confusion_miou(torch.zeros_like(target), target, 3) == pytest.approx((3 / 6) / 3)


def test_fit_linear_is_deterministic_and_separates_separable_data() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=g)
    x = F.one_hot(y, 4).double() * 3 + 0.3 * torch.randn(200, 4, generator=g, dtype=torch.float64)
    a, b = fit_linear(x, y, 4), fit_linear(x, y, 4)
    assert torch.equal(a.weight, b.weight)
    assert (a(x).argmax(1) == y).all()


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


def test_class_probe_scenes_hold_one_object_of_the_labelled_shape() -> None:
    from lowlabel.methods.densecl.demo import probe_data

    for part in probe_data(32, seed=0, single_object=True, n_train=20, n_test=10):
        for semantic, shape in zip(part.semantic, part.shape, strict=True):
            assert set(semantic.unique().tolist()) == {0, int(shape) + 1}
