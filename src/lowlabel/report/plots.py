"""The report's generic figures: loss curves per named term and evaluation metrics over training."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from lowlabel.report.figures import figure
from lowlabel.report.runs import Run

SKIP = {"step", "epoch", "time", "lr"}


def png_bytes(fig: object, dpi: int = 90) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)  # type: ignore[attr-defined]
    return buffer.getvalue()


def _curves(runs: Sequence[Run], keep: object, title: str) -> bytes | None:
    names = sorted({k for r in runs for row in r.rows for k, v in row.items()
                    if keep(k) and isinstance(v, (int, float)) and not isinstance(v, bool)})
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = figure(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for run in runs:
            points = [(row["step"], row[name]) for row in run.rows if name in row and "step" in row]
            if points:
                ax.plot(*zip(*points, strict=True), label=run.name, lw=1.2)
        ax.set_title(name.removeprefix("eval/"), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if len(runs) > 1:
        axes.flat[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def loss_curves(runs: Sequence[Run]) -> bytes | None:
    """PNG: one panel per named loss term of metrics.jsonl (the weighted total as `loss`), one line per run."""
    return _curves(runs, lambda k: k not in SKIP and not k.startswith("eval/"), "training losses")


def eval_curves(runs: Sequence[Run]) -> bytes | None:
    """PNG: one panel per evaluation metric logged during training (`eval/...`), one line per run."""
    return _curves(runs, lambda k: k.startswith("eval/"), "evaluation during training")
