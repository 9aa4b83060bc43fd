"""Tests of the faces world: degradations, quality, identities, expressions, determinism, dataset and preview."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from lowlabel.data.synth import faces_degrade as fd
from lowlabel.data.synth.faces import (
    _RANGES,
    EXPRESSIONS,
    PARAM_NAMES,
    FacesConfig,
    FacesDataset,
    Nuisance,
    identity_params,
    preview,
    render_clean,
    render_face,
    sample_nuisance,
)
from lowlabel.data.synth.faces_degrade import DEGRADATIONS, Degradation, degrade, occlusion_box, quality
from lowlabel.errors import LowlabelError

SIZE = 64
NZ = Nuisance(rotation=4.0, scale=1.02, shift_x=0.02, light_strength=0.15, light_angle=1.0)


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    """A clean float render (3, 64, 64) of identity 5, happy."""
    return render_clean(identity_params(5, 0), 1, NZ, SIZE)


def hf_energy(img: np.ndarray) -> float:
    """High-frequency energy: mean squared difference of neighbouring grey pixels, both directions."""
    g = img.astype(np.float64).mean(axis=-1)
    return float((np.diff(g, axis=0) ** 2).mean() + (np.diff(g, axis=1) ** 2).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255.0**2 / mse))


LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


@pytest.mark.parametrize("kind", ["blur", "lowres"])
def test_blur_and_lowres_lower_high_frequency_energy(clean: np.ndarray, kind: str) -> None:
    energies = [hf_energy(degrade(clean, Degradation(**{kind: s}))) for s in LEVELS]
    assert all(b < 0.8 * a for a, b in itertools.pairwise(energies)), energies


@pytest.mark.parametrize("s", [0.1, 0.25, 0.5])
def test_blur_is_close_to_an_exact_gaussian_in_the_interior(clean: np.ndarray, s: float) -> None:
    sigma = fd.BLUR_SIGMA * s
    ours = degrade(clean, Degradation(blur=s)).astype(np.float64)
    base = degrade(clean, Degradation()).astype(np.float64)
    ref = gaussian_filter(base, sigma=(sigma, sigma, 0), mode="nearest", truncate=6.0)
    inner = slice(16, -16)
    err = np.abs(ours - ref)[inner, inner]
    # PIL's three-box approximation of the Gaussian: small against the change the blur makes
    assert err.mean() < 1.0 and err.mean() < 0.1 * np.abs(base - ref)[inner, inner].mean()


def test_noise_raises_residual_variance_as_specified(clean: np.ndarray) -> None:
    base = degrade(clean, Degradation()).astype(np.float64)
    stds = [(degrade(clean, Degradation(noise=s, noise_seed=7)) - base).std() for s in LEVELS]
    assert stds[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(stds)), stds
    # before clipping bites, the residual std is NOISE_STD * s in [0, 1] units
    assert stds[1] == pytest.approx(fd.NOISE_STD * 0.25 * 255, rel=0.1)


@pytest.mark.parametrize("s", [0.05, 0.2, 0.37, 0.6, 1.0])
def test_occlusion_covers_the_stated_fraction(clean: np.ndarray, s: float) -> None:
    rng = np.random.default_rng(int(s * 100))
    for _ in range(5):
        deg = Degradation(occlusion=s, occlusion_pos=tuple(rng.random(2)), occlusion_aspect=float(np.exp(rng.normal())),
                          occlusion_colour=(1.0, 0.0, 1.0))  # fmt: skip
        changed = (degrade(clean, deg) != degrade(clean, Degradation())).any(axis=-1)
        magenta = (degrade(clean, deg) == np.array([255, 0, 255])).all(axis=-1)
        top, left, h, w = occlusion_box(deg, SIZE)
        assert top >= 0 and left >= 0 and top + h <= SIZE and left + w <= SIZE
        assert magenta.sum() == h * w  # the patch is exactly the box (no clean pixel is pure magenta)
        assert abs(h * w - s * SIZE**2) <= h + w  # rounding of one side only
        assert changed.sum() <= h * w
        assert changed.mean() == pytest.approx(s, abs=0.03)


def test_jpeg_strength_lowers_fidelity(clean: np.ndarray) -> None:
    base = degrade(clean, Degradation())
    levels = (0.1, 0.4, 0.7, 1.0)
    psnrs = [psnr(degrade(clean, Degradation(jpeg=s)), base) for s in levels]
    assert all(b < a for a, b in itertools.pairwise(psnrs)), psnrs
    assert [fd.jpeg_quality(s) for s in (0.0, 1.0)] == [fd.JPEG_Q0, fd.JPEG_Q1]


def test_quality_is_one_when_clean_and_monotone_in_every_strength() -> None:
    assert quality(Degradation()) == 1.0
    grid = np.linspace(0, 1, 11)
    for kind in DEGRADATIONS:
        q = [quality(Degradation(**{kind: float(s)})) for s in grid]
        assert all(0 < b < a <= 1 for a, b in itertools.pairwise(q)), (kind, q)
        h, _ = fd.QUALITY_CURVES[kind]
        if h <= 1:  # at s = h the factor is one half, whatever the steepness
            assert quality(Degradation(**{kind: h})) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = dict(zip(DEGRADATIONS, rng.random(5).tolist(), strict=True))
        singles = np.prod([quality(Degradation(**{k: v})) for k, v in s.items()])
        assert quality(Degradation(**s)) == pytest.approx(singles)  # product of per-degradation factors
        assert 0 < quality(Degradation(**s)) <= 1


def _crop_features(images: list[np.ndarray]) -> np.ndarray:
    x = np.stack(images).astype(np.float64)[:, 10:54, 12:52].reshape(len(images), -1)
    x -= x.mean(axis=1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identities_are_distinguishable_and_degradation_hurts() -> None:
    n, cfg = 50, FacesConfig()

    def image(identity: int, j: int, deg: Degradation) -> np.ndarray:
        rng = np.random.default_rng([11, identity, j])
        return render_face(identity_params(identity, 0), int(rng.integers(7)), sample_nuisance(rng, cfg), deg, SIZE)

    gallery = _crop_features([image(i, 0, Degradation()) for i in range(n)])
    labels = np.repeat(np.arange(n), 3)

    def accuracy(deg: Degradation) -> float:
        probes = _crop_features([image(i, j, deg) for i in range(n) for j in (1, 2, 3)])
        return float(((probes @ gallery.T).argmax(1) == labels).mean())

    acc_clean = accuracy(Degradation())
    acc_bad = accuracy(Degradation(blur=0.9, lowres=0.9))
    assert quality(Degradation(blur=0.9, lowres=0.9)) < 0.1
    assert acc_clean > 10 / n, acc_clean  # chance is 1/n
    assert acc_bad < 0.5 * acc_clean, (acc_clean, acc_bad)


def test_identity_params_deterministic_distinct_and_in_range() -> None:
    a, b = identity_params(3, 0), identity_params(3, 0)
    assert np.array_equal(a, b) and a.shape == (len(PARAM_NAMES),)
    assert not np.array_equal(a, identity_params(4, 0))
    assert not np.array_equal(a, identity_params(3, 1))
    p = dict(zip(PARAM_NAMES, identity_params(17, 2), strict=True))
    for name, (lo, hi) in _RANGES.items():
        assert lo <= p[name] <= hi, name
    colours = identity_params(17, 2)[-12:]
    assert ((colours >= 0) & (colours <= 1)).all()


@pytest.mark.parametrize("identity", [0, 1, 2, 3])
def test_drawing_windows_hold_every_part(identity: int) -> None:
    """Second formulation: the same face drawn with every part evaluated on the full grid."""
    from unittest import mock

    from lowlabel.data.synth import faces

    rng = np.random.default_rng(identity)
    cfg = FacesConfig(max_rotation=15.0, scale_range=(0.85, 1.15), max_shift=0.1)
    for expression in range(len(EXPRESSIONS)):
        nuisance = sample_nuisance(rng, cfg)
        params = identity_params(identity, 0)
        windowed = render_clean(params, expression, nuisance, SIZE)
        with mock.patch.object(faces._Canvas, "window", lambda *args: (slice(None), slice(None))):
            full = render_clean(params, expression, nuisance, SIZE)
        assert np.abs(windowed - full).max() < 1e-5, EXPRESSIONS[expression]


def _boxes(params: np.ndarray) -> dict[str, tuple[slice, slice]]:
    """Pixel boxes of the mouth and brow regions for Nuisance() (identity transform), worked out from PARAM_NAMES."""
    p = dict(zip(PARAM_NAMES, params, strict=True))
    cy, b = p["face_cy"], p["face_b"]

    def px(v: float) -> int:
        return round((v + 1) * SIZE / 2)

    mouth_v = cy + p["mouth_y_f"] * b
    brow_v = cy + p["eye_y_f"] * b - p["brow_dy"]
    half_w = p["eye_dx"] + p["brow_len"]
    return {
        "mouth": (slice(px(mouth_v - 0.15), px(mouth_v + 0.25)), slice(px(-0.3), px(0.3))),
        "brows": (slice(px(brow_v - 0.12), px(brow_v + 0.1)), slice(px(-half_w), px(half_w))),
    }


@pytest.mark.parametrize("identity", [0, 1, 2])
def test_expressions_change_mouth_and_brows_only_inside_the_face(identity: int) -> None:
    params = identity_params(identity, 0)
    renders = [render_face(params, k, Nuisance(), Degradation(), SIZE).astype(np.int16) for k in range(7)]
    boxes = _boxes(params)
    for k in range(1, len(EXPRESSIONS)):
        diff = np.abs(renders[k] - renders[0]).max(axis=-1)
        in_mouth = diff[boxes["mouth"]].mean()
        in_brows = diff[boxes["brows"]].mean()
        assert in_mouth > 3 or in_brows > 3, (EXPRESSIONS[k], in_mouth, in_brows)
        assert diff[:, :4].max() == 0 and diff[:4].max() == 0  # background untouched
    flat = np.stack([r.ravel() for r in renders])
    assert len({hashlib.sha256(r.tobytes()).hexdigest() for r in flat}) == 7


def test_expressions_are_recognisable_across_identities() -> None:
    """Nearest class mean of gradient-magnitude images, trained and tested on disjoint identities."""
    cfg = FacesConfig()

    def data(identities: range) -> tuple[np.ndarray, np.ndarray]:
        x, y = [], []
        for i in identities:
            for k in range(len(EXPRESSIONS)):
                rng = np.random.default_rng([5, i, k])
                img = render_face(identity_params(i, 0), k, sample_nuisance(rng, cfg), Degradation(), SIZE, 0.8)
                g = img.astype(np.float64).mean(axis=-1)
                x.append(np.hypot(np.diff(g, axis=1)[:-1], np.diff(g, axis=0)[:, :-1])[8:56, 10:54].ravel())
                y.append(k)
        return np.array(x), np.array(y)

    x_train, y_train = data(range(40))
    x_test, y_test = data(range(100, 120))
    means = np.stack([x_train[y_train == k].mean(0) for k in range(len(EXPRESSIONS))])
    pred = ((x_test[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == y_test).mean() > 2 / len(EXPRESSIONS)  # chance is 1/7


_DIGEST = """
import hashlib, sys
from lowlabel.data.synth.faces import FacesDataset
data = FacesDataset(n_identities=4, images_per_identity=3, seed=int(sys.argv[1]))
h = hashlib.sha256()
for i in range(len(data)):
    h.update(data.sample(i).image.tobytes())
print(h.hexdigest())
"""


def test_same_seed_is_byte_identical_across_processes() -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", _DIGEST, "3"]
    there = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.strip()

    def digest(seed: int) -> str:
        data = FacesDataset(n_identities=4, images_per_identity=3, seed=seed)
        return hashlib.sha256(b"".join(data.sample(i).image.tobytes() for i in range(len(data)))).hexdigest()

    assert there == digest(3)
    assert digest(4) != digest(3)


def test_same_seed_is_identical_across_dataloader_workers() -> None:
    data = FacesDataset(n_identities=6, images_per_identity=4, seed=5)
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(data, batch_size=5, num_workers=workers)
        batches.append(list(loader))
    for a, b in zip(*batches, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_dataset_items_carry_the_ground_truth() -> None:
    cfg = FacesConfig(size=48, clean_fraction=0.0, apply_prob=1.0)
    data = FacesDataset(n_identities=3, images_per_identity=4, seed=1, cfg=cfg)
    assert len(data) == 12
    for i in (0, 5, 11):
        item, raw = data[i], data.sample(i)
        assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
        assert item["image"].min() >= 0 and item["image"].max() <= 1
        as_bytes = (item["image"] * 255).round().to(torch.uint8)
        assert torch.equal(as_bytes, torch.from_numpy(raw.image).permute(2, 0, 1))
        assert item["identity"].item() == i // 4 == raw.identity
        assert item["expression"].item() == raw.expression
        assert item["quality"].item() == pytest.approx(quality(raw.degradation)) and raw.quality < 1
        assert item["degradation"].tolist() == pytest.approx([raw.strengths[k] for k in DEGRADATIONS])
        assert all(v > 0 for v in raw.strengths.values())  # apply_prob = 1: every degradation present
    with pytest.raises(IndexError):
        data.sample(12)


def test_config_controls_clean_fraction_and_expressions() -> None:
    one_hot = tuple(1.0 if k == 3 else 0.0 for k in range(7))
    data = FacesDataset(5, 4, seed=2, cfg=FacesConfig(clean_fraction=1.0, expression_probs=one_hot, size=32))
    samples = [data.sample(i) for i in range(len(data))]
    assert all(s.quality == 1.0 and s.expression == 3 for s in samples)
    assert np.array_equal(samples[0].image, degrade(render_clean(identity_params(0, 2), 3, samples[0].nuisance, 32,
                                                                 samples[0].intensity), Degradation()))  # fmt: skip


@pytest.mark.parametrize(
    "make",
    [
        lambda: FacesConfig(size=8),
        lambda: FacesConfig(expression_probs=(1.0, 0.0)),
        lambda: FacesConfig(clean_fraction=1.5),
        lambda: FacesConfig(max_strengths={"blur": 1.0}),
        lambda: FacesConfig(scale_range=(1.2, 0.9)),
        lambda: Degradation(blur=1.5),
        lambda: FacesDataset(0, 3),
        lambda: FacesDataset(2, 3, seed=-1),
        lambda: identity_params(-1),
        lambda: render_clean(identity_params(0), 7, Nuisance(), 32),
    ],
)
def test_bad_inputs_raise_lowlabel_error(make: Callable[[], object]) -> None:
    with pytest.raises(LowlabelError):
        make()


def test_preview_writes_a_png(tmp_path: Path) -> None:
    from lowlabel.data import synth

    out = synth.preview("faces", n=5, out=tmp_path / "sub" / "faces.png", seed=1)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(LowlabelError):
        preview(0, tmp_path / "x.png")
