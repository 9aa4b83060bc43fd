"""The volumes world: the label is the blob, conventions match the LA files, and everything is deterministic."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from lowlabel.data.io import read_h5_volume
from lowlabel.data.synth import volumes as V
from lowlabel.errors import LowlabelError

SMALL = V.VolumeConfig(shape=(48, 48, 32))


def _phi_reference(blob: V.Blob, x: np.ndarray) -> float:
    """phi at one voxel, written out with plain math (monomials enumerated independently of the module)."""
    y = blob.rotation.T @ (x - blob.centre)
    q = y / blob.axes
    rho = math.sqrt(float(q @ q))
    u = q / rho
    monomials = [math.prod(u[list(c)]) for d in (1, 2, 3) for c in itertools.combinations_with_replacement(range(3), d)]
    f = rho / (1 + float(np.dot(blob.coeffs, monomials)))
    scale = float(blob.axes.mean())
    phi = (f - 1) * scale
    if blob.lumen:
        phi = max(phi, (blob.lumen - f) * scale)
    if blob.tube_radius:
        p = x - blob.centre
        s = min(max(float(p @ blob.tip) / float(blob.tip @ blob.tip), 0.0), 1.0)
        phi = min(phi, float(np.linalg.norm(p - s * blob.tip)) - blob.tube_radius)
    return phi


@pytest.mark.parametrize("index", range(6))
def test_label_is_the_thresholded_implicit_function(index: int) -> None:
    cfg = V.VolumeConfig()
    blob = V.sample_blob(np.random.default_rng([5, index]), cfg)
    _, label = V.generate_volume(np.random.default_rng([5, index]), cfg)
    rng = np.random.default_rng(index)
    # Half the probes near the centre (inside and in the lumen), half anywhere.
    near = np.clip(np.round(blob.centre + rng.normal(0, blob.axes.max(), (150, 3))), 0, np.array(cfg.shape) - 1)
    anywhere = rng.integers(0, cfg.shape, size=(150, 3))
    checked = 0
    for x in np.concatenate([near, anywhere]).astype(int):
        phi = _phi_reference(blob, x.astype(float))
        if abs(phi) > 1e-3:
            assert label[tuple(x)] == (phi < 0), (x, phi)
            checked += 1
    assert checked > 250
    np.testing.assert_array_equal(label, V.blob_implicit(blob, cfg.shape) < 0)
    assert 0 < label.sum() < label.size


def test_implicit_function_is_about_a_signed_distance() -> None:
    blob = V.sample_blob(np.random.default_rng([6, 0]), V.VolumeConfig())
    phi = V.blob_implicit(blob, V.VolumeConfig().shape)
    inside = phi < 0
    sdt = ndimage.distance_transform_edt(~inside) - ndimage.distance_transform_edt(inside)
    band = np.abs(sdt) <= 3
    assert np.abs(phi[band] - sdt[band]).mean() < 0.75


@pytest.mark.parametrize("cfg", [V.VolumeConfig(), SMALL], ids=["64x64x48", "48x48x32"])
def test_one_component_away_from_border_both_kinds(cfg: V.VolumeConfig) -> None:
    kinds = set()
    for index in range(16):
        blob = V.sample_blob(np.random.default_rng([7, index]), cfg)
        kinds.add("lumen" if blob.lumen else "appendage" if blob.tube_radius else "plain")
        _, label = V.generate_volume(np.random.default_rng([7, index]), cfg)
        _, n_components = ndimage.label(label)
        assert n_components == 1, index
        padded = np.pad(np.ones(np.array(cfg.shape) - 2, bool), 1)  # False on the six faces
        assert not label[~padded].any(), index
        if blob.lumen:  # the lumen is a closed cavity: background not connected to the outside
            _, n_background = ndimage.label(label == 0)
            assert n_background == 2, index
    assert {"lumen", "appendage"} <= kinds


def test_blob_brighter_before_noise_and_noise_present() -> None:
    clean = V.VolumeConfig(noise=0.0)
    for index in range(5):
        image, label = V.generate_volume(np.random.default_rng([8, index]), clean)
        fg, bg = image[label == 1].mean(), image[label == 0].mean()
        assert fg > bg + 1.5, index
    noisy_image, _ = V.generate_volume(np.random.default_rng([8, 0]), V.VolumeConfig())
    clean_image, _ = V.generate_volume(np.random.default_rng([8, 0]), clean)
    # Same blob, texture and bias; the noisy one differs voxel to voxel (high-frequency residual).
    residual = noisy_image - clean_image * noisy_image.std() / clean_image.std()
    assert np.abs(np.diff(residual, axis=0)).mean() > 0.1


def test_dtype_axes_and_zscore() -> None:
    image, label = V.generate_volume(np.random.default_rng(0), V.VolumeConfig(shape=(40, 36, 24)))
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert image.shape == label.shape == (40, 36, 24)
    assert set(np.unique(label)) == {0, 1}
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 1e-4


@pytest.mark.realdata
def test_conventions_equal_the_la_files(shared_data: Path) -> None:
    pytest.importorskip("h5py")
    case = sorted(p for p in (shared_data / "la_heart").iterdir() if p.is_dir())[0]
    real = read_h5_volume(case / "mri_norm2.h5")
    image, label = V.generate_volume(np.random.default_rng(0), V.VolumeConfig())
    assert image.dtype == real["image"].dtype and label.dtype == real["label"].dtype
    assert image.ndim == real["image"].ndim == 3
    # LA volumes are (H, W, D) with the fewest voxels along D (the slice axis); so are ours.
    assert int(np.argmin(real["image"].shape)) == int(np.argmin(image.shape)) == 2
    assert set(np.unique(real["label"])) == set(np.unique(label)) == {0, 1}


def test_deterministic_and_seed_dependent() -> None:
    a = V.generate_volume(np.random.default_rng([1, 2]), SMALL)
    b = V.generate_volume(np.random.default_rng([1, 2]), SMALL)
    c = V.generate_volume(np.random.default_rng([1, 3]), SMALL)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert a[0].tobytes() != c[0].tobytes()


def test_same_bytes_in_a_fresh_interpreter() -> None:
    code = (
        "import hashlib, numpy as np; from lowlabel.data.synth import volumes as V; "
        "im, lb = V.generate_volume(np.random.default_rng([1, 2]), V.VolumeConfig(shape=(48, 48, 32))); "
        "print(hashlib.sha256(im.tobytes() + lb.tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(Path(V.__file__).parents[3])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    image, label = V.generate_volume(np.random.default_rng([1, 2]), SMALL)
    assert out.stdout.strip() == hashlib.sha256(image.tobytes() + label.tobytes()).hexdigest()


def test_dataset_same_in_loader_workers() -> None:
    ds = V.VolumesDataset(4, seed=3, cfg=SMALL)
    direct = [ds[i] for i in range(4)]
    assert direct[0]["image"].shape == (1, 48, 48, 32) and direct[0]["image"].dtype == torch.float32
    assert direct[0]["label"].shape == (48, 48, 32) and direct[0]["label"].dtype == torch.int64
    image, label = V.generate_volume(np.random.default_rng([3, 2]), SMALL)
    assert direct[2]["image"][0].numpy().tobytes() == image.tobytes()
    np.testing.assert_array_equal(direct[2]["label"].numpy(), label)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2)
    for i, batch in enumerate(loader):
        assert batch["image"][0].numpy().tobytes() == direct[i]["image"].numpy().tobytes()
        assert torch.equal(batch["label"][0], direct[i]["label"])
    with pytest.raises(IndexError):
        ds[4]


def test_smooth_field_equals_scipy_zoom() -> None:
    field = V.smooth_field(np.random.default_rng(4), (40, 30, 20), 5)
    coarse = np.random.default_rng(4).standard_normal((5, 4, 2)).astype(np.float32)
    expected = ndimage.zoom(coarse, np.array((40, 30, 20)) / (5, 4, 2), order=1, grid_mode=False)
    np.testing.assert_allclose(field, expected, atol=1e-5)


def test_write_la_layout_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    cfg = V.VolumeConfig(shape=(32, 32, 16), semi_axes=(0.2, 0.25))
    root = V.write_la_layout(tmp_path / "la", n_train=2, n_test=1, seed=9, cfg=cfg)
    train = (root / "train.list").read_text().split()
    test = (root / "test.list").read_text().split()
    assert len(train) == 2 and len(test) == 1 and all(len(name) == 20 for name in train + test)
    ds = V.VolumesDataset(3, seed=9, cfg=cfg)
    for k, name in enumerate(train + test):
        data = read_h5_volume(root / name / "mri_norm2.h5")
        assert data["image"].dtype == np.float32 and data["label"].dtype == np.uint8
        np.testing.assert_array_equal(data["image"], ds[k]["image"][0].numpy())
        np.testing.assert_array_equal(data["label"], ds[k]["label"].numpy())
    with pytest.raises(LowlabelError, match="n_train"):
        V.write_la_layout(tmp_path / "none", 0, 0)


def test_config_errors_and_preview(tmp_path: Path) -> None:
    with pytest.raises(LowlabelError, match="deform"):
        V.VolumeConfig(deform=1.0)
    with pytest.raises(LowlabelError, match="shape"):
        V.VolumeConfig(shape=(8, 64, 64))
    with pytest.raises(LowlabelError, match="semi_axes"):
        V.VolumeConfig(semi_axes=(0.3, 0.2))
    out = V.preview(n=2, out=tmp_path / "v.png", seed=0)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
