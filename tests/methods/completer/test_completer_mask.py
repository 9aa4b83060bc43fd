"""Missing-view masks as COMPLETER uses them (data.make_mask over the multiview world's missing_view_mask)."""

from __future__ import annotations

import numpy as np
import pytest

from lowlabel.errors import LowlabelError
from lowlabel.methods.completer.data import make_mask


@pytest.mark.parametrize("n_views", [2, 3])
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_fraction_complete_is_one_minus_rate_and_no_row_is_empty(rate: float, n_views: int) -> None:
    for seed in (1, 2):
        mask = make_mask(4485, n_views, rate, seed)
        assert mask.shape == (4485, n_views) and set(np.unique(mask)) <= {0, 1}
        assert abs(mask.all(axis=1).mean() - (1 - rate)) < 0.005
        assert (mask.sum(axis=1) >= 1).all()
    if n_views == 2:  # each incomplete row drops either view with probability 1/2
        incomplete = mask[~mask.all(axis=1)]
        assert abs(incomplete[:, 0].mean() - 0.5) < 0.05


def test_edge_rates_and_seeds() -> None:
    np.testing.assert_array_equal(make_mask(50, 2, 0.0, seed=3), np.ones((50, 2)))
    for rate in (1.0, -0.01):
        with pytest.raises(LowlabelError, match="missing rate"):
            make_mask(50, 2, rate, seed=3)
    high = make_mask(1000, 2, 0.999, seed=0)
    assert high.all(axis=1).sum() == 1 and (high.sum(axis=1) >= 1).all()
    np.testing.assert_array_equal(make_mask(100, 2, 0.5, seed=4), make_mask(100, 2, 0.5, seed=4))
    assert not np.array_equal(make_mask(100, 2, 0.5, seed=4), make_mask(100, 2, 0.5, seed=5))
