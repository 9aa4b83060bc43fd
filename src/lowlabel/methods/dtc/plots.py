"""Slice overlays of a DTC prediction: image, ground truth and prediction on the three central planes, as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage
from torch import nn

from lowlabel.methods.dtc.data import Case
from lowlabel.methods.dtc.inference import segment_volume
from lowlabel.methods.dtc.recipe import effective_patch, effective_stride
from lowlabel.report.figures import figure, save_figure


def overlay_png(model: nn.Module, cfg: object, case: Case, out: Path) -> Path:
    """Segment `case` with `model` (settings of recipe Config `cfg`) and write a PNG: axial, coronal and sagittal
    slices (sagittal x, coronal y, axial z) through the label's centre (or the volume's), ground truth
    contour green, prediction red."""
    mask, _ = segment_volume(model, case.image, patch=effective_patch(cfg), stride=effective_stride(cfg),
                             scale=cfg.scale, threshold=cfg.threshold, keep_largest=cfg.keep_largest,
                             batch_size=cfg.infer_batch)
    label = case.label if case.label is not None else np.zeros_like(mask)
    ref = label if label.any() else mask
    centre = [round(c) for c in ndimage.center_of_mass(ref)] if ref.any() else [s // 2 for s in mask.shape]
    fig, axes = figure(1, 3, figsize=(10, 3.6))
    for axis, ax, name in zip(range(3), axes, ("sagittal x", "coronal y", "axial z"), strict=True):
        take = [slice(None)] * 3
        take[axis] = centre[axis]
        ax.imshow(case.image[tuple(take)].T, cmap="gray", origin="lower")
        if label[tuple(take)].any():
            ax.contour(label[tuple(take)].T, levels=[0.5], colors="lime", linewidths=0.8)
        if mask[tuple(take)].any():
            ax.contour(mask[tuple(take)].T, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"{case.name[:12]} {name}={centre[axis]}", fontsize=8)
        ax.axis("off")
    fig.suptitle("green: ground truth, red: DTC prediction", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out, dpi=90)
