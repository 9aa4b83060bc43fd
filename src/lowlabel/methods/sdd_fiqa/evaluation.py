"""SDD-FIQA evaluation on the faces world: verification pairs, baseline quality scores, EVRC/AOC table and plot.

The models come in as arguments: nothing here imports the recipe (the demo imports this module).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import convolve, gaussian_filter

from lowlabel.engine.batches import embed
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json
from lowlabel.metrics.quality import EVRC, aoc, error_versus_reject, pair_quality, plot_evrc

FMRS: tuple[float, ...] = (1e-2, 1e-3)


def _grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H, W) float64 luma."""
    return images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def laplacian_sharpness(images: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of the grey image, a classic no-reference sharpness score; (N, H, W, 3) uint8 -> (N,).

    One 3-D convolution with a (1, 3, 3) 4-neighbour Laplacian kernel (reflected borders) over the whole batch.
    Additive noise raises it (white noise of variance v adds 20 v), so it rates noisy faces as sharp.
    """
    kernel = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None]
    return convolve(_grey(images), kernel, mode="reflect").reshape(len(images), -1).var(axis=1)


def smoothed_laplacian_energy(images: np.ndarray, sigma: float) -> np.ndarray:
    """Noise-robust sharpness: mean squared Laplacian-of-Gaussian response at scale `sigma` (pixels); (N, H, W, 3)
    uint8 -> (N,).

    The Gaussian pre-filter is a band-pass on the Laplacian: white noise, whose energy is spread evenly up to the
    Nyquist frequency, loses most of it (the LoG's squared gain falls as exp(-sigma^2 w^2)), while face edges, whose
    energy sits at lower frequencies, keep theirs; blur and low resolution still remove that band. `sigma` is tuned
    on the tuning world (docs/methods/sdd_fiqa.md).
    """
    grey = _grey(images)  # second derivatives along the two image axes only, never across the batch axis
    response = sum(gaussian_filter(grey, (0.0, sigma, sigma), order=order, mode="reflect") for order in ((0, 2, 0),
                                                                                                        (0, 0, 2)))
    return np.square(response).reshape(len(images), -1).mean(axis=1)


def verification_pairs(emb: torch.Tensor, identity: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                            np.ndarray]:
    """All pairs i < j of a small test set: cosine scores and index pairs, split into genuine and impostor."""
    f = torch.nn.functional.normalize(emb.double(), dim=1)
    sims = (f @ f.T).numpy()
    i, j = np.triu_indices(len(f), k=1)
    same = (identity[i] == identity[j]).numpy()
    pairs = np.stack([i, j], 1)
    return sims[i, j][same], sims[i, j][~same], pairs[same], pairs[~same]


def _aoc_key(fmr: float) -> str:
    return f"aoc_fmr{fmr:.0e}".replace("e-0", "e-")


def evrc_table(test: dict[str, torch.Tensor], scores: Mapping[str, np.ndarray], *, embedder: torch.nn.Module,
               out: Path | None, device: torch.device | str = "cpu", plotted: tuple[str, ...] | None = None
               ) -> tuple[dict[str, dict[str, float]], list[str]]:
    """AOC at each of `FMRS` of every quality score (name -> (N,) per test image) on the held-out identities of
    `test` (as `data.faces_world` gives it), with pairs scored by `embedder` (on `device`). Writes
    evrc_fmr<FMR>.png into `out` (when given) with the curves of `plotted` (default: all)."""
    emb = embed(embedder, test["images"], device=device).cpu()
    gen, imp, gen_pairs, imp_pairs = verification_pairs(emb, test["identity"])
    rows: dict[str, dict[str, float]] = {}
    fnmr0 = 0.0
    for fmr in FMRS:
        curves = {name: error_versus_reject(gen, imp, pair_quality(q, gen_pairs), pair_quality(q, imp_pairs), fmr=fmr)
                  for name, q in scores.items()}
        for name, curve in curves.items():
            rows.setdefault(name, {})[_aoc_key(fmr)] = aoc(curve)
        fnmr0 = float(next(iter(curves.values())).fnmr[0])
        if out is not None:
            shown = {k: v for k, v in curves.items() if plotted is None or k in plotted}
            plot_evrc(shown, Path(out) / f"evrc_fmr{fmr:g}.png",
                      title=f"faces world, held-out identities, FMR {fmr:g}")
    notes = [f"{len(gen)} genuine / {len(imp)} impostor pairs; FNMR without rejection at FMR {FMRS[-1]:g} = "
             f"{fnmr0:.3f}"]
    return rows, notes


ENUMERATE_UP_TO = 20_000_000
"""Test sets with at most this many pairs in all are enumerated; larger ones are sampled."""


def _unique_subset(rng: np.random.Generator, draw, target: int, n: int) -> np.ndarray:
    """`target` distinct pairs (i < j) from repeated `draw(k)` -> (k, 2) uniform pair draws: the distinct pairs of
    the draws so far, then a uniform subset of them (a uniform random subset of the pairs `draw` can give)."""
    keys = np.empty(0, np.int64)
    while len(keys) < target:
        pairs = np.sort(draw(2 * (target - len(keys)) + 16), axis=1)
        keys = np.unique(np.concatenate([keys, pairs[:, 0] * n + pairs[:, 1]]))
    keys = np.sort(rng.choice(keys, target, replace=False)) if len(keys) > target else keys
    return np.stack([keys // n, keys % n], axis=1)


def sample_verification_pairs(labels: np.ndarray, *, max_genuine: int, max_impostor: int, seed: int = 0
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor index pairs (G, 2), (I, 2) with i < j, from identity labels (N,).

    Every pair of the set when it has at most max_genuine / max_impostor pairs, else a uniform random subset of that
    size (seeded; numpy's default_rng(seed)). Sets of up to `ENUMERATE_UP_TO` pairs in all are enumerated; larger
    ones are drawn: genuine pairs by an identity chosen in proportion to its pair count and two distinct images of
    it, impostor pairs as uniform image pairs of different identities, duplicates removed; then at most half of all
    pairs of a kind are taken, so the draws end quickly.
    """
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    rng = np.random.default_rng(seed)
    if n * (n - 1) // 2 <= ENUMERATE_UP_TO:
        i, j = np.triu_indices(n, k=1)
        same = labels[i] == labels[j]
        out = []
        for mask, limit in ((same, max_genuine), (~same, max_impostor)):
            pairs = np.stack([i[mask], j[mask]], axis=1)
            out.append(pairs[np.sort(rng.choice(len(pairs), limit, replace=False))] if len(pairs) > limit else pairs)
        return out[0], out[1]
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    per_identity = sizes * (sizes - 1) // 2
    total_genuine = int(per_identity.sum())

    def genuine(k: int) -> np.ndarray:
        ident = rng.choice(len(sizes), k, p=per_identity / total_genuine)
        a = rng.integers(0, sizes[ident])
        b = rng.integers(0, sizes[ident] - 1)
        b += b >= a
        return np.stack([order[starts[ident] + a], order[starts[ident] + b]], axis=1)

    def impostor(k: int) -> np.ndarray:
        pairs = rng.integers(0, n, (k, 2))
        return pairs[labels[pairs[:, 0]] != labels[pairs[:, 1]]]

    total_impostor = n * (n - 1) // 2 - total_genuine
    return (_unique_subset(rng, genuine, min(max_genuine, total_genuine // 2), n),
            _unique_subset(rng, impostor, min(max_impostor, total_impostor // 2), n))


def folder_pairs(labels: np.ndarray, emb: np.ndarray, quality: np.ndarray, *, max_genuine: int, max_impostor: int,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Verification pairs of a labelled set: cosine score of the embeddings (N, D), genuine flag, and pair quality
    (the lower of the two image qualities (N,)), for the pairs of `sample_verification_pairs`."""
    gen, imp = sample_verification_pairs(labels, max_genuine=max_genuine, max_impostor=max_impostor, seed=seed)
    pairs = np.concatenate([gen, imp])
    f = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return {"score": np.einsum("pd,pd->p", f[pairs[:, 0]], f[pairs[:, 1]]),
            "genuine": np.arange(len(pairs)) < len(gen), "quality": pair_quality(quality, pairs)}


def evrc_report(table: dict[str, np.ndarray], out: Path, *, fmr: float, fixed_threshold: bool,
                source: dict[str, object], label: str | None = None) -> tuple[EVRC, dict[str, object]]:
    """EVRC and AOC of a pair table (`folder_pairs` or `data.read_pairs`); writes the plot `out` (the curve named
    `label`, default the file's stem) and the curve, AOC and pair counts to `out` with suffix .json."""
    genuine = table["genuine"]
    if genuine.all() or not genuine.any():
        raise LowlabelError(f"{source}: need both genuine and impostor pairs; got {int(genuine.sum())} genuine of "
                            f"{len(genuine)}")
    curve = error_versus_reject(table["score"][genuine], table["score"][~genuine], table["quality"][genuine],
                                table["quality"][~genuine], fmr=fmr, recompute_threshold=not fixed_threshold)
    plot_evrc({label or Path(out).stem: curve}, out)
    summary = {"aoc": aoc(curve), "fmr": fmr, "recompute_threshold": not fixed_threshold,
               "genuine_pairs": int(genuine.sum()), "impostor_pairs": int((~genuine).sum()),
               "fractions": curve.fractions.tolist(), "fnmr": curve.fnmr.tolist(),
               "thresholds": curve.thresholds.tolist(), **source}
    write_json(Path(out).with_suffix(".json"), summary)
    return curve, summary
