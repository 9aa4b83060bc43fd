"""FDRL figures: the confusion matrix and the mean per-branch weights per expression, from a run's summary.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lowlabel.report.figures import figure, save_figure


def confusion_png(confusion: Sequence[Sequence[float]], classes: Sequence[str], out: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class) with the counts written in the cells."""
    counts = np.asarray(confusion, dtype=np.float64)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1.0)
    fig, ax = figure(figsize=(1.0 + 0.75 * len(classes), 0.6 + 0.7 * len(classes)))
    im = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {np.trace(counts) / max(counts.sum(), 1):.3f}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def weights_png(mean_weights: Sequence[Sequence[float]], classes: Sequence[str], out: Path, title: str = "") -> Path:
    """Mean normalised intra-feature weight of each latent feature (branch) per true expression, as a heat map
    (rows: expression, columns: branch; a uniform weight is 1/M)."""
    w = np.asarray(mean_weights, dtype=np.float64)
    fig, ax = figure(figsize=(1.5 + 0.5 * w.shape[1], 0.8 + 0.5 * len(classes)))
    span = max(float(np.nanmax(np.abs(w - 1.0 / w.shape[1]))), 1e-6)
    im = ax.imshow(w, cmap="RdBu_r", vmin=1.0 / w.shape[1] - span, vmax=1.0 / w.shape[1] + span)
    ax.set_xticks(range(w.shape[1]), [f"l{j + 1}" for j in range(w.shape[1])], fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("latent feature (branch)")
    ax.set_title(title or f"mean branch weight per expression (uniform = 1/{w.shape[1]})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def run_figures(run_dir: Path) -> list[Path]:
    """confusion.png (and branch_weights.png for an FDRL head) from run_dir/summary.json; [] without one."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return []
    test = json.loads(path.read_text()).get("test", {})
    if "confusion" not in test:
        return []
    out = [confusion_png(test["confusion"], test["classes"], Path(run_dir) / "confusion.png")]
    if "mean_weights" in test:
        out.append(weights_png(test["mean_weights"], test["classes"], Path(run_dir) / "branch_weights.png"))
    return out
