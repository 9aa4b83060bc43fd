"""DTC sliding window: official window starts, exact reconstruction with an identity network, padding, averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowlabel.methods.dtc import inference
from lowlabel.methods.dtc.inference import segment_volume, sliding_window_probs
from lowlabel.nn.vnet import VNet


def test_window_starts_official_rule() -> None:
    # LA case 175 x 132 x 88, patch 112 x 112 x 80, stride 18/18/4 -> 5 x 3 x 3 = 45 windows (the official count)
    assert inference.window_starts(175, 112, 18) == [0, 18, 36, 54, 63]
    assert inference.window_starts(132, 112, 18) == [0, 18, 20]
    assert inference.window_starts(88, 80, 4) == [0, 4, 8]
    assert inference.window_starts(80, 80, 4) == [0]


@pytest.mark.parametrize("shape", [(40, 37, 21), (20, 50, 16), (10, 12, 9)])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_identity_network_reconstructs_volume(shape: tuple[int, int, int], batch_size: int) -> None:
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    calls = []

    def identity(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape[0])
        assert batch.shape[1:] == (1, 16, 32, 16)
        return batch

    out = inference.sliding_window_probs(identity, image, (16, 32, 16), (7, 9, 3), batch_size=batch_size)
    assert out.shape == image.shape
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)
    padded = [max(s, p) for s, p in zip(shape, (16, 32, 16), strict=True)]
    n = np.prod([len(inference.window_starts(s, p, st)) for s, p, st in zip(padded, (16, 32, 16), (7, 9, 3),
                                                                               strict=True)])
    assert sum(calls) == n and max(calls) <= batch_size


def test_scores_are_window_averages() -> None:
    # prob_fn returns the window's start index along x as a constant: voxel x gets the mean over covering windows
    image = torch.zeros(10, 4, 4)
    image[:, 0, 0] = torch.arange(10.0)

    def first_x(batch: torch.Tensor) -> torch.Tensor:
        return batch[:, :, :1, :1, :1].expand_as(batch)

    out = inference.sliding_window_probs(first_x, image, (4, 4, 4), (3, 1, 1))
    starts = inference.window_starts(10, 4, 3)  # [0, 3, 6]
    for x in range(10):
        covering = [s for s in starts if s <= x < s + 4]
        assert float(out[x, 2, 2]) == pytest.approx(np.mean(covering))


def test_segment_volume_equals_the_plain_network_window_by_window() -> None:
    torch.manual_seed(0)
    net = VNet(n_filters=4)
    net.train()
    with torch.no_grad():  # BatchNorm statistics away from their initial values, so that folding them matters
        net(torch.randn(2, 1, 32, 32, 16))
    net.eval()
    image = torch.randn(40, 36, 20)
    patch, stride = [32, 32, 16], [5, 4, 3]

    def plain(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(net(batch)[1])

    expected = sliding_window_probs(plain, image, patch, stride, batch_size=1)
    mask, probs = segment_volume(net, image.numpy(), patch=patch, stride=stride, keep_largest=False)
    torch.testing.assert_close(torch.from_numpy(probs), expected, rtol=1e-4, atol=1e-5)
    assert np.array_equal(mask, (probs > 0.5).astype(np.uint8))
    assert net.enc2[0].weight.is_contiguous()  # the caller's network is not converted
