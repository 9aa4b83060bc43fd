"""The retrieved-images figure: a query and its top database images under a score matrix, one panel each (the image
when there is one, else the graph's labels as text)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from lowlabel.report.figures import figure, save_figure


def top_matches(scores: torch.Tensor, query: int, k: int = 5) -> list[int]:
    """The `k` database columns with the highest score for `query`, the query itself excluded, best first (ties:
    lowest column)."""
    s = scores[query].clone().float()
    s[query] = -float("inf")
    order = torch.sort(s, descending=True, stable=True).indices
    return order[: min(k, len(s) - 1)].tolist()


def retrieval_figure(
    query: int,
    matches: Sequence[int],
    panel: Callable[[int], tuple[np.ndarray | None, str]],
    titles: Sequence[str],
    path: Path,
    title: str,
) -> Path:
    """PNG: the query then its `matches`, titled `titles` (query first); `panel(i)` gives item i's image (H, W, 3)
    uint8 or None, and its caption (drawn as text in place of a missing image)."""
    items = [query, *matches]
    fig, axes = figure(1, len(items), figsize=(2.5 * len(items), 4.4), squeeze=False)
    for ax, item, head in zip(axes[0], items, titles, strict=True):
        image, caption = panel(item)
        if image is not None:
            ax.imshow(image, interpolation="nearest")
            ax.set_xlabel(textwrap.fill(caption, 32), fontsize=7)
        else:
            ax.text(0.5, 0.5, textwrap.fill(caption, 28), ha="center", va="center", fontsize=7, wrap=True)
        ax.set_title(head, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
