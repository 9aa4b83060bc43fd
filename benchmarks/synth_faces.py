"""Faces world: throughput on one CPU core, and the recognisability calibration behind its quality curves.

Default: samples/s of `FacesDataset.__getitem__` at 64x64 and 112x112 (one thread), the parts (clean render, each
degradation at strength 0.5), and the obvious alternative of drawing every part on the full grid instead of its
bounding window. `--calibrate`: identification accuracy of a PCA(120)+LDA recogniser trained on clean faces against
the strength of each degradation, with the Hill curve f(s) = 1 / (1 + (s / h)^n) fitted to it, next to the
constants in faces_degrade.QUALITY_CURVES (results/synth_faces_calibration.json).
Usage: python benchmarks/synth_faces.py [--quick] [--calibrate]
"""

from __future__ import annotations

import sys
import time
from unittest import mock

import numpy as np
import torch

from _common import measure, write_results
from lowlabel.data.synth import faces
from lowlabel.data.synth.faces import FacesConfig, FacesDataset, Nuisance, identity_params, render_clean
from lowlabel.data.synth.faces_degrade import DEGRADATIONS, QUALITY_CURVES, Degradation, degrade


def _row(what: str, size: int, n: int, r: dict[str, float]) -> dict[str, object]:
    return {"what": what, "size": size, "samples_per_s": n / r["seconds_best"],
            "us_per_sample": 1e6 * r["seconds_best"] / n, "peak_mib": r["peak_mib"]}  # fmt: skip


def speed(quick: bool) -> None:
    """Best of `repeat` runs of `n` samples: the dataset, its parts, and full-grid drawing."""
    torch.set_num_threads(1)
    n, repeat = (200, 2) if quick else (1000, 5)
    rows = []
    for size in (64, 112):
        data = FacesDataset(n_identities=n // 10, images_per_identity=10, seed=0, cfg=FacesConfig(size=size))
        r = measure(lambda data=data: [data[i] for i in range(len(data))], repeat=repeat, warmup=1)
        rows.append(_row("FacesDataset[i] (default cfg)", size, n, r))
        params, nuisance = identity_params(0), Nuisance(rotation=5.0, scale=1.05, light_strength=0.2)
        img = render_clean(params, 1, nuisance, size)
        parts = {"render_clean": lambda p=params, nz=nuisance, s=size: render_clean(p, 1, nz, s)}
        for name in DEGRADATIONS:
            deg = Degradation(**{name: 0.5}, noise_seed=1)
            parts[f"degrade {name}=0.5"] = lambda deg=deg, img=img: degrade(img, deg)
        for what, fn in parts.items():
            r = measure(lambda fn=fn: [fn() for _ in range(n)], repeat=repeat)
            rows.append(_row(what, size, n, r))
        with mock.patch.object(faces._Canvas, "window", lambda *args: (slice(None), slice(None))):
            r = measure(lambda p=params, nz=nuisance, s=size: [render_clean(p, 1, nz, s) for _ in range(n)],
                        repeat=repeat)  # fmt: skip
        rows.append(_row("render_clean, every part on the full grid (alternative)", size, n, r))
    write_results("synth_faces", rows, notes="one thread; best of several runs; default FacesConfig. "
                  f"numpy {np.__version__}; the wall clock also counts other processes on a busy machine")  # fmt: skip


def calibrate(quick: bool) -> None:
    """Identification accuracy of PCA+LDA (trained on clean faces) against each degradation's strength."""
    from scipy.optimize import curve_fit
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    n_id, n_train, n_probe = (40, 10, 3) if quick else (100, 16, 6)
    cfg, t0 = FacesConfig(), time.time()

    def image(identity: int, j: int, deg: Degradation) -> np.ndarray:
        rng = np.random.default_rng([7, identity, j])
        expression, nuisance = int(rng.integers(7)), faces.sample_nuisance(rng, cfg)
        return faces.render_face(identity_params(identity), expression, nuisance, deg, 64, rng.uniform(0.6, 1.0))

    def features(ims: list[np.ndarray]) -> np.ndarray:
        return (np.stack(ims)[:, 8:56, 8:56].astype(np.float32) / 255).reshape(len(ims), -1)

    x = features([image(i, j, Degradation()) for i in range(n_id) for j in range(n_train)])
    pca = PCA(min(120, len(x) - 1), random_state=0).fit(x)
    lda = LinearDiscriminantAnalysis().fit(pca.transform(x), np.repeat(np.arange(n_id), n_train))
    labels = np.repeat(np.arange(n_id), n_probe)

    def accuracy(**strength: float) -> float:
        reps = 3 if "occlusion" in strength else 1  # average over patch placements
        accs = []
        for r in range(reps):
            pos = tuple(np.random.default_rng(r).random(2))
            deg = Degradation(**strength, occlusion_pos=pos, noise_seed=3)
            ims = [image(i, 100 + j, deg) for i in range(n_id) for j in range(n_probe)]
            accs.append(float((lda.predict(pca.transform(features(ims))) == labels).mean()))
        return float(np.mean(accs))

    grid = np.linspace(0.1, 1.0, 10)
    clean, chance = accuracy(), 1.0 / n_id
    rows = [{"degradation": "clean", "accuracy": [clean]}]
    for name in DEGRADATIONS:
        acc = np.array([accuracy(**{name: float(s)}) for s in grid])
        rel = np.clip((acc - chance) / (clean - chance), 1e-3, 1.0)
        (h, n), _ = curve_fit(lambda s, h, n: 1 / (1 + (s / h) ** n), grid, rel, p0=(0.5, 3.0), maxfev=20000)
        rows.append({"degradation": name, "accuracy": acc.round(3).tolist(), "relative": rel.round(3).tolist(),
                     "fit_h": round(float(h), 3), "fit_n": round(float(n), 2),
                     "used_h": QUALITY_CURVES[name][0], "used_n": QUALITY_CURVES[name][1]})  # fmt: skip
    notes = (
        f"{n_id} identities, {n_train} clean training and {n_probe} probe images each, 64x64, strengths "
        f"{grid.round(1).tolist()}; relative = (acc - chance) / (clean - chance); {time.time() - t0:.0f} s"
    )
    write_results("synth_faces_calibration", rows, notes=notes)


if __name__ == "__main__":
    (calibrate if "--calibrate" in sys.argv else speed)(quick="--quick" in sys.argv)
