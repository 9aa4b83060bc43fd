"""What every world's Dataset view shares: `n` items, item i generated from np.random.default_rng([seed, i])."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from lowlabel.errors import LowlabelError


class SeededDataset(Dataset):
    """Base of the worlds' torch views: item i depends on (seed, i) alone, so it is byte-identical in any process
    and any DataLoader worker, and nothing is stored. Subclasses build item i from `self.rng(i)`."""

    def __init__(self, n: int, seed: int = 0) -> None:
        if n < 0:
            raise LowlabelError(f"{type(self).__name__} n={n}: the number of items cannot be negative")
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item `index` (IndexError outside [0, n))."""
        if not 0 <= index < self.n:
            raise IndexError(f"item {index} out of range for a {type(self).__name__} of {self.n}")
        return np.random.default_rng([self.seed, index])
