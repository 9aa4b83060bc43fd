"""Tiny folder-per-identity datasets and recogniser files for the SDD-FIQA tests (own
names, not the official ones). Its fixtures are mounted by conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def make_folder(root: Path, n_ids: int = 4, per_id: int = 9, side: int = 16) -> Path:
    """`root/member NN/frame_J.png`: identity k is a flat colour, image j adds noise of std 10 + 8 j."""
    rng = np.random.default_rng(0)
    for k in range(n_ids):
        (root / f"member {k:02d}").mkdir(parents=True)
        base = rng.integers(0, 255, (1, 1, 3))
        for j in range(per_id):
            img = np.clip(base + rng.normal(0, 10 + 8 * j, (side, side, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"member {k:02d}" / f"frame_{j}.png")
    return root


class MeanStd(torch.nn.Module):
    """A stand-in recogniser: per-channel mean and std (B, 3, S, S) -> (B, 6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


@pytest.fixture
def folder(tmp_path: Path) -> Callable[..., Path]:
    return lambda n_ids=4, per_id=9, side=16: make_folder(tmp_path / "faces", n_ids, per_id, side)


@pytest.fixture
def mean_std_script(tmp_path: Path) -> Path:
    path = tmp_path / "mean_std.pt"
    torch.jit.script(MeanStd()).save(str(path))
    return path
