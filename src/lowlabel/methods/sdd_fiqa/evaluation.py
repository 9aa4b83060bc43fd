"""SDD-FIQA evaluation on the faces world: verification pairs, baseline quality scores, EVRC/AOC table and plot.

The models come in as arguments: nothing here imports the recipe (the demo imports this module).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import convolve

from lowlabel.engine.batches import embed
from lowlabel.metrics.quality import aoc, error_versus_reject, pair_quality, plot_evrc

FMRS: tuple[float, ...] = (1e-2, 1e-3)


def laplacian_sharpness(images: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of the grey image, a classic no-reference sharpness score; (N, H, W, 3) uint8 -> (N,).

    One 3-D convolution with a (1, 3, 3) 4-neighbour Laplacian kernel (reflected borders) over the whole batch.
    """
    grey = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    kernel = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None]
    return convolve(grey, kernel, mode="reflect").reshape(len(grey), -1).var(axis=1)


def verification_pairs(emb: torch.Tensor, identity: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                            np.ndarray]:
    """All pairs i < j of a small test set: cosine scores and index pairs, split into genuine and impostor."""
    f = torch.nn.functional.normalize(emb.double(), dim=1)
    sims = (f @ f.T).numpy()
    i, j = np.triu_indices(len(f), k=1)
    same = (identity[i] == identity[j]).numpy()
    pairs = np.stack([i, j], 1)
    return sims[i, j][same], sims[i, j][~same], pairs[same], pairs[~same]


def evrc_table(test: dict[str, torch.Tensor], *, embedder: torch.nn.Module, regressor: torch.nn.Module,
               out: Path, seed: int = 0, device: torch.device | str = "cpu"
               ) -> tuple[dict[str, dict[str, float]], list[str]]:
    """AOC of SDD-FIQA and baselines (true quality, sharpness, random) on held-out identities (`test` as
    `data.faces_world` gives it; both models on `device`); writes evrc_fmr<FMR>.png into `out`."""
    gen, imp, gen_pairs, imp_pairs = verification_pairs(embed(embedder, test["images"], device=device).cpu(),
                                                        test["identity"])
    scores = {
        "SDD-FIQA": embed(regressor, test["images"], device=device).cpu().numpy(),
        "true quality (upper reference)": test["quality"].numpy(),
        "sharpness": laplacian_sharpness(test["uint8"].numpy()),
        "random": np.random.default_rng(seed).random(len(test["images"])),
    }
    rows: dict[str, dict[str, float]] = {}
    for fmr in FMRS:
        curves = {}
        for name, q in scores.items():
            curves[name] = error_versus_reject(gen, imp, pair_quality(q, gen_pairs), pair_quality(q, imp_pairs),
                                               fmr=fmr)
            rows.setdefault(name, {})[f"aoc_fmr{fmr:.0e}".replace("e-0", "e-")] = aoc(curves[name])
        plot_evrc(curves, Path(out) / f"evrc_fmr{fmr:g}.png", title=f"faces world, held-out identities, FMR {fmr:g}")
    fnmr0 = float(curves["random"].fnmr[0])
    notes = [f"{len(gen)} genuine / {len(imp)} impostor pairs; FNMR without rejection at FMR 1e-3 = {fnmr0:.3f}"]
    return rows, notes
