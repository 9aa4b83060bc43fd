"""MoCo-v2 view pipeline on tensors: shapes, each op checked in isolation, randomness per image."""

from __future__ import annotations

import pytest
import torch

from lowlabel.data.transforms import IMAGENET_MEAN, IMAGENET_STD, blur_kernel_size, moco_v2, normalize_only, two_views
from lowlabel.errors import LowlabelError

OFF = {"jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "flip_p": 0.0, "crop_scale": (1.0, 1.0)}


def images(n: int = 6, size: int = 24) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_output_shape_dtype_and_two_different_views() -> None:
    torch.manual_seed(0)
    a, b = two_views(moco_v2(16), images())
    assert a.shape == b.shape == (6, 3, 16, 16) and a.dtype == torch.float32
    assert not torch.allclose(a, b)
    u8 = (images() * 255).to(torch.uint8)
    assert two_views(moco_v2(16), u8)[0].shape == (6, 3, 16, 16)


def test_everything_off_is_resize_plus_imagenet_normalisation() -> None:
    x = images(size=16)
    out = moco_v2(16, **OFF)(x)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out * std + mean, x, atol=1e-5, rtol=0)  # scale 1: the whole image, unchanged
    torch.testing.assert_close(normalize_only()(x), (x - mean) / std)


def test_flip_and_grayscale_with_probability_one() -> None:
    x = images(size=16)
    torch.manual_seed(1)
    flipped = moco_v2(16, normalize=False, **{**OFF, "flip_p": 1.0})
    ref = moco_v2(16, normalize=False, **OFF)
    torch.manual_seed(2)
    a = flipped(x)
    torch.manual_seed(2)
    b = ref(x)
    torch.testing.assert_close(a, b.flip(-1))
    gray = moco_v2(16, normalize=False, **{**OFF, "grayscale_p": 1.0})(x)
    torch.testing.assert_close(gray[:, 0], gray[:, 1])
    torch.testing.assert_close(gray[:, 1], gray[:, 2])


def test_blur_smooths_and_kernel_covers_three_sigma() -> None:
    assert blur_kernel_size(2.0) == 13 and blur_kernel_size(0.5) == 5
    x = images(size=24)
    blurred = moco_v2(24, normalize=False, **{**OFF, "blur_p": 1.0, "blur_sigma": (1.5, 2.0)})(x)
    sharp = moco_v2(24, normalize=False, **OFF)(x)
    tv = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
    assert tv(blurred) < 0.5 * tv(sharp)


def test_randomness_is_per_image_and_seeded() -> None:
    x = images(1).expand(8, -1, -1, -1).contiguous()  # the same image eight times
    torch.manual_seed(3)
    a = moco_v2(16)(x)
    assert not torch.allclose(a[0], a[1])  # each image gets its own draw
    torch.manual_seed(3)
    torch.testing.assert_close(moco_v2(16)(x), a)


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(LowlabelError, match="crop_scale"):
        moco_v2(16, crop_scale=(0.9, 0.2))
    with pytest.raises(LowlabelError, match="jitter"):
        moco_v2(16, jitter=(0.4, 0.4))
    with pytest.raises(LowlabelError, match="expected a batch"):
        two_views(moco_v2(16), torch.rand(3, 16, 16))
