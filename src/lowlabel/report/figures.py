"""Writing matplotlib figures: one place for the Agg backend, the folder creation and the clean-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out: str | Path, dpi: int = 100, **savefig_kwargs: Any) -> Path:
    """Save `fig` to `out` (parent folders created), close it, and return the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, **savefig_kwargs)
    pyplot().close(fig)
    return out
