"""Procedural worlds with exact ground truth, deterministic by seed (see docs/data.md and docs/data/<world>.md).

Each world module defines a plain generator, a `torch.utils.data.Dataset` view and
`preview(n: int, out: Path, seed: int = 0) -> Path`, which writes a labelled PNG grid.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from lowlabel.errors import LowlabelError

WORLDS: dict[str, str] = {
    "shapes": "lowlabel.data.synth.shapes",
    "faces": "lowlabel.data.synth.faces",
    "volumes": "lowlabel.data.synth.volumes",
    "multiview": "lowlabel.data.synth.multiview",
    "geometry": "lowlabel.data.synth.geometry",
}


def preview(world: str, n: int, out: Path, seed: int = 0) -> Path:
    """Write a labelled PNG grid of `n` samples of `world` to `out`; returns the path written."""
    if world not in WORLDS:
        raise LowlabelError(f"unknown world '{world}'; known: {', '.join(WORLDS)}")
    try:
        module = importlib.import_module(WORLDS[world])
    except ModuleNotFoundError as err:
        raise LowlabelError(f"world '{world}' is not implemented yet") from err
    return module.preview(n=n, out=Path(out), seed=seed)
