"""DTC losses: the signed distance map against brute force and its exact properties; Dice, L_LSF, L_DTC by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.dtc import losses


def _brute_sdf(mask: np.ndarray) -> np.ndarray:
    """Per sample: all-pairs Euclidean distances between voxels, normalised per side, inner boundary zeroed."""
    out = np.zeros(mask.shape, dtype=np.float64)
    for b in range(mask.shape[0]):
        m = mask[b].astype(bool)
        if not m.any():
            continue
        coords = np.stack(np.meshgrid(*[np.arange(s) for s in m.shape], indexing="ij"), -1).reshape(-1, m.ndim)
        flat = m.ravel()
        d = np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))
        to_bg = np.where(flat[:, None] & ~flat[None, :], d, np.inf).min(1)  # foreground -> nearest background
        to_fg = np.where(~flat[:, None] & flat[None, :], d, np.inf).min(1)  # background -> nearest foreground
        pos = np.where(flat, to_bg, 0.0)
        neg = np.where(flat, 0.0, to_fg)
        sdf = neg / neg.max() - pos / pos.max()
        sdf[flat & (pos == 1.0)] = 0.0
        out[b] = sdf.reshape(m.shape)
    return out


@pytest.mark.parametrize("shape", [(3, 7, 6, 5), (2, 9, 8), (2, 5, 11, 4)])
def test_sdf_matches_brute_force(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    mask = (rng.random(shape) < 0.3).astype(np.uint8)
    mask[0] = 0
    mask[0][tuple(s // 2 for s in shape[1:])] = 1  # a single voxel object
    got = losses.signed_distance_map(torch.from_numpy(mask))
    assert got.dtype == torch.float32 and got.shape == mask.shape
    np.testing.assert_allclose(got.numpy(), _brute_sdf(mask), atol=1e-6)


def test_sdf_exact_properties() -> None:
    mask = torch.zeros(2, 12, 10, 9, dtype=torch.uint8)
    mask[0, 3:9, 2:8, 2:7] = 1
    mask[1, 1:4, 1:4, 1:4] = 1
    sdf = losses.signed_distance_map(mask)
    fg = mask.bool()
    boundary = torch.zeros_like(fg)
    for axis, shift in itertools.product((1, 2, 3), (-1, 1)):
        boundary |= fg & ~torch.roll(fg, shift, dims=axis)  # objects are away from the borders: roll is safe
    assert bool((sdf[boundary] == 0).all())
    assert bool((sdf[fg & ~boundary] < 0).all()) and bool((sdf[~fg] > 0).all())
    for b in range(2):
        assert float(sdf[b].min()) == pytest.approx(-1.0) and float(sdf[b].max()) == pytest.approx(1.0)
    # the block's centre is 3 voxels from the background on its short axis: -3/3 = -1 after normalisation
    assert float(sdf[0, 5, 4, 4]) == pytest.approx(-1.0)
    # the far corner of sample 1 is at distance |(11,9,8)-(3,3,3)| from the cube: the outside maximum
    assert float(sdf[1, 11, 9, 8]) == pytest.approx(1.0)
    assert float(sdf[1, 5, 3, 3]) == pytest.approx(2.0 / math.sqrt(8**2 + 6**2 + 5**2))


def test_sdf_empty_and_full_masks() -> None:
    mask = torch.zeros(2, 6, 6, 6)
    mask[1] = 1
    sdf = losses.signed_distance_map(mask)
    assert bool((sdf[0] == 0).all()), "all-background: zeros (official)"
    assert bool((sdf[1] == -1).all()), "all-foreground: -1 (documented deviation from the official NaN)"


def test_sdf_rejects_bad_masks() -> None:
    with pytest.raises(LowlabelError, match="other than 0 and 1"):
        losses.signed_distance_map(torch.full((1, 4, 4, 4), 2))
    with pytest.raises(LowlabelError, match="shape"):
        losses.signed_distance_map(torch.zeros(4, 4))


def test_dice_loss_by_hand() -> None:
    p = torch.tensor([0.5, 1.0, 0.0, 0.25])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # 2 * 1.5 / (0.25 + 1 + 0.0625 + 2) with the 1e-5 smoothing
    expected = 1 - (3.0 + 1e-5) / (3.3125 + 1e-5)
    assert float(losses.dice_loss(p, y)) == pytest.approx(expected)
    assert float(losses.dice_loss(y, y)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(LowlabelError):
        losses.dice_loss(p, y[:3])


def test_level_set_loss_is_mse() -> None:
    z = torch.tensor([[0.5, -0.5], [0.0, 1.0]])
    t = torch.tensor([[0.0, -1.0], [0.0, 0.0]])
    assert float(losses.level_set_loss(z, t)) == pytest.approx((0.25 + 0.25 + 0 + 1) / 4)


def test_consistency_vanishes_when_heads_agree_in_the_limit() -> None:
    # seg logits = -k z makes sigmoid(-k z) and sigmoid(logits) identical: zero for any k.
    z = torch.linspace(-0.9, 0.9, 2 * 1 * 4 * 4 * 4).reshape(2, 1, 4, 4, 4)
    assert float(losses.dual_task_consistency(z, -1500.0 * z)) == pytest.approx(0.0, abs=1e-12)
    # heads agreeing on the mask (level set negative inside, logits large inside) -> 0 as the logits grow
    inside = torch.rand(2, 1, 4, 4, 4) < 0.5
    level = torch.where(inside, -0.3, 0.3)
    values = [float(losses.dual_task_consistency(level, torch.where(inside, s, -s))) for s in (2.0, 8.0, 32.0)]
    assert values[0] > values[1] > values[2] and values[2] < 1e-20
    # hand value: z = 0 gives 0.5; logits 0 gives 0.5 -> 0; logits log(3) gives 0.75 -> (0.25)^2
    assert float(losses.dual_task_consistency(torch.zeros(1, 1, 1, 1, 1),
                                              torch.full((1, 1, 1, 1, 1), math.log(3.0)))) == pytest.approx(0.0625)


def test_consistency_gradient_reaches_both_heads() -> None:
    z = torch.full((1, 1, 2, 2, 2), -1e-4, requires_grad=True)
    logits = torch.zeros(1, 1, 2, 2, 2, requires_grad=True)
    losses.dual_task_consistency(z, logits).backward()
    assert z.grad is not None and logits.grad is not None
    assert float(z.grad.abs().sum()) > 0 and float(logits.grad.abs().sum()) > 0
