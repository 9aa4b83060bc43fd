"""Matplotlib figures without pyplot: no process-wide backend choice, no global figure registry to leak into.

`figure()` builds a `matplotlib.figure.Figure` with its axes; `save_figure()` writes it (PNG through Agg, chosen
by the file suffix at save time) atomically. Library code plots only through these two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowlabel.files import atomic_path


def figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.4, 4.8), squeeze: bool = True,
           **subplots_kwargs: Any) -> tuple[Any, Any]:
    """(Figure, axes) as `plt.subplots` gives them, built on `matplotlib.figure.Figure`; `nrows=0` gives no axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplots_kwargs) if nrows > 0 else None
    return fig, axes


def save_figure(fig: Any, out: str | Path, dpi: int = 100, **savefig_kwargs: Any) -> Path:
    """Save `fig` to `out` (parent folders created; a temporary file renamed into place) and return the path."""
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, **savefig_kwargs)
    return Path(out)
