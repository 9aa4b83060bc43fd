"""Faces world: throughput on one CPU core, and the recognisability calibration behind its quality curves.

Default: samples/s of `FacesDataset.__getitem__` at 64x64 and 112x112 (one thread), the parts (clean render, each
degradation at strength 0.5), and the obvious alternative of drawing every part on the full grid instead of its
bounding window. `--calibrate lda|cnn|cnn-clean`: identification accuracy of a recogniser (PCA+LDA trained on clean
faces, a small CNN trained on the default mix, or on clean faces) against the strength of each degradation, with the
Hill curve f(s) = 1 / (1 + (s / h)^n) fitted to it; faces_degrade.QUALITY_CURVES combines the lda and cnn fits
(results/synth_faces_calibration_<recogniser>.json).
Usage: python benchmarks/synth_faces.py [--quick] [--calibrate lda|cnn|cnn-clean]
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from unittest import mock

import numpy as np
import torch

from _common import measure, write_results
from lowlabel.data.synth import faces
from lowlabel.data.synth.faces import FacesConfig, FacesDataset, Nuisance, identity_params, render_clean
from lowlabel.data.synth.faces_degrade import DEGRADATIONS, Degradation, degrade, sample_degradation


def _row(what: str, size: int, n: int, r: dict[str, float]) -> dict[str, object]:
    return {"what": what, "size": size, "samples_per_s_best": n / r["seconds_best"],
            "samples_per_s_mean": n / r["seconds_mean"], "us_per_sample_best": 1e6 * r["seconds_best"] / n,
            "peak_mib": r["peak_mib"]}  # fmt: skip


def _loop(fn: Callable[[], object], n: int) -> None:
    for _ in range(n):
        fn()


def _items(data: FacesDataset) -> None:
    for i in range(len(data)):
        data[i]


def speed(quick: bool) -> None:
    """`repeat` runs of `n` samples (best and mean): the dataset, its parts, and full-grid drawing.

    Runs are short (0.1-0.3 s) so that the best of them shows the generator's own cost on a machine shared with other
    processes; the mean shows what a loaded machine gave.
    """
    torch.set_num_threads(1)
    n, repeat = (100, 3) if quick else (200, 15)
    rows = []
    for size in (64, 112):
        data = FacesDataset(n_identities=n // 10, images_per_identity=10, seed=0, cfg=FacesConfig(size=size))
        r = measure(lambda data=data: _items(data), repeat=repeat, warmup=1)
        rows.append(_row("FacesDataset[i] (default cfg)", size, n, r))
        params, nuisance = identity_params(0), Nuisance(rotation=5.0, scale=1.05, light_strength=0.2)
        img = render_clean(params, 1, nuisance, size)
        parts = {"render_clean": lambda p=params, nz=nuisance, s=size: render_clean(p, 1, nz, s)}
        for name in DEGRADATIONS:
            deg = Degradation(**{name: 0.5}, noise_seed=1)
            parts[f"degrade {name}=0.5"] = lambda deg=deg, img=img: degrade(img, deg)
        for what, fn in parts.items():
            rows.append(_row(what, size, n, measure(lambda fn=fn: _loop(fn, n), repeat=repeat, warmup=1)))
        with mock.patch.object(faces._Canvas, "window", lambda *args: (slice(None), slice(None))):
            r = measure(lambda p=params, nz=nuisance, s=size: _loop(lambda: render_clean(p, 1, nz, s), n),
                        repeat=repeat, warmup=1)  # fmt: skip
        rows.append(_row("render_clean, every part on the full grid (alternative)", size, n, r))
    write_results("synth_faces", rows, notes="one thread; default FacesConfig; numpy " + np.__version__ + ", "
                  f"load average before the run {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip


def _fit_lda(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """PCA(120) + LDA on flattened 48x48 centre crops; returns a predict function."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x = x[:, 8:56, 8:56].reshape(len(x), -1)
    pca = PCA(min(120, len(x) - 1), random_state=0).fit(x)
    lda = LinearDiscriminantAnalysis().fit(pca.transform(x), y)
    return lambda z: lda.predict(pca.transform(z[:, 8:56, 8:56].reshape(len(z), -1)))


def _fit_cnn(x: np.ndarray, y: np.ndarray, epochs: int = 25) -> Callable[[np.ndarray], np.ndarray]:
    """A 4-block CNN (32-64-128-128 channels, BN, ReLU, pooling) trained with cross-entropy, Adam 2e-3, batch 64."""
    torch.manual_seed(0)
    nn = torch.nn

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

    net = nn.Sequential(*block(3, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2), *block(64, 128),
                        nn.MaxPool2d(2), *block(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(128, int(y.max()) + 1))  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    xt, yt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(64):
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(z).permute(0, 3, 1, 2).contiguous()).argmax(1).numpy()

    return predict


def calibrate(quick: bool, recogniser: str) -> None:
    """Identification accuracy against each degradation's strength, one degradation at a time.

    recogniser "lda": PCA+LDA trained on clean faces; "cnn": the small CNN trained on the default mix of clean and
    degraded faces (FacesConfig()); "cnn-clean": the same CNN trained on clean faces. All are tested on new images
    (new nuisance and expression) of the training identities.
    """
    from scipy.optimize import curve_fit

    n_id, n_train, n_probe = (40, 10, 3) if quick else (100, 16, 6)
    cfg, t0 = FacesConfig(), time.time()

    def image(identity: int, j: int, deg: Degradation) -> np.ndarray:
        rng = np.random.default_rng([7, identity, j])
        expression, nuisance = int(rng.integers(7)), faces.sample_nuisance(rng, cfg)
        img = faces.render_face(identity_params(identity), expression, nuisance, deg, 64, rng.uniform(0.6, 1.0))
        return img.astype(np.float32) / 255

    def train_deg(i: int, j: int) -> Degradation:
        if recogniser != "cnn":
            return Degradation()
        return sample_degradation(np.random.default_rng([9, i, j]), cfg.clean_fraction, cfg.apply_prob,
                                  cfg.max_strengths)  # fmt: skip

    x = np.stack([image(i, j, train_deg(i, j)) for i in range(n_id) for j in range(n_train)])
    y = np.repeat(np.arange(n_id), n_train)
    if recogniser not in ("lda", "cnn", "cnn-clean"):
        raise SystemExit(f"unknown recogniser {recogniser!r}; use lda, cnn or cnn-clean")
    predict = _fit_lda(x, y) if recogniser == "lda" else _fit_cnn(x, y, epochs=5 if quick else 25)
    labels = np.repeat(np.arange(n_id), n_probe)

    def accuracy(**strength: float) -> float:
        accs = []
        for r in range(3 if "occlusion" in strength else 1):  # average over patch placements
            deg = Degradation(**strength, occlusion_pos=tuple(np.random.default_rng(r).random(2)), noise_seed=3)
            probes = np.stack([image(i, 100 + j, deg) for i in range(n_id) for j in range(n_probe)])
            accs.append(float((predict(probes) == labels).mean()))
        return float(np.mean(accs))

    grid = np.linspace(0.1, 1.0, 10)
    clean, chance = accuracy(), 1.0 / n_id
    rows: list[dict[str, object]] = [{"degradation": "clean", "accuracy": [round(clean, 3)]}]
    for name in DEGRADATIONS:
        acc = np.array([accuracy(**{name: float(s)}) for s in grid])
        rel = np.clip((acc - chance) / (clean - chance), 1e-3, 1.0)
        (h, n), _ = curve_fit(lambda s, h, n: 1 / (1 + (s / h) ** n), grid, rel, p0=(0.5, 3.0), maxfev=20000)
        rows.append({"degradation": name, "accuracy": acc.round(3).tolist(), "relative": rel.round(3).tolist(),
                     "fit_h": round(float(h), 3), "fit_n": round(float(n), 2)})  # fmt: skip
    notes = (
        f"recogniser {recogniser}; {n_id} identities, {n_train} training and {n_probe} probe images each, 64x64, "
        f"strengths {grid.round(1).tolist()}; relative = (acc - chance) / (clean - chance); {time.time() - t0:.0f} s"
    )
    write_results(f"synth_faces_calibration_{recogniser}", rows, notes=notes)


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    if "--calibrate" in sys.argv:
        calibrate(quick, sys.argv[sys.argv.index("--calibrate") + 1])
    else:
        speed(quick)
