"""lowlabel.data.io: round trips, and an error naming the file and the problem for each way a file can be bad."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowlabel.data import io
from lowlabel.errors import LowlabelError


def _rgb(h: int = 12, w: int = 17) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", ["png", "bmp", "webp"])
def test_read_image_lossless_round_trip(tmp_path: Path, ext: str) -> None:
    arr = _rgb()
    path = tmp_path / f"a.{ext}"
    Image.fromarray(arr).save(path, lossless=True) if ext == "webp" else Image.fromarray(arr).save(path)
    out = io.read_image(path)
    assert out.dtype == np.uint8 and out.shape == (12, 17, 3)
    np.testing.assert_array_equal(out, arr)


def test_read_image_jpeg_is_close(tmp_path: Path) -> None:
    arr = np.full((16, 16, 3), (200, 40, 90), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    out = io.read_image(tmp_path / "a.jpg")
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - arr).max() <= 4


def test_read_image_converts_gray_rgba_and_16bit(tmp_path: Path) -> None:
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = io.read_image(tmp_path / "g.png")
    assert out.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)
    rgba = np.dstack([_rgb(6, 8), np.full((6, 8), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), rgba[:, :, :3])
    deep = np.array([[0, 257, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    np.testing.assert_array_equal(io.read_image(tmp_path / "d.png")[0, :, 0], [0, 1, 255, 4])


def test_read_image_errors_name_file_and_problem(tmp_path: Path) -> None:
    with pytest.raises(LowlabelError, match=r"missing\.png: image file not found"):
        io.read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(LowlabelError, match=r"empty\.png: image file is empty"):
        io.read_image(tmp_path / "empty.png")
    (tmp_path / "text.jpg").write_text("this is not an image\n" * 10)
    with pytest.raises(LowlabelError, match=r"text\.jpg: not an image"):
        io.read_image(tmp_path / "text.jpg")
    with pytest.raises(LowlabelError, match="is not a file"):
        io.read_image(tmp_path)
    for ext in ("png", "jpg"):
        Image.fromarray(_rgb(64, 64)).save(tmp_path / f"full.{ext}")
        data = (tmp_path / f"full.{ext}").read_bytes()
        (tmp_path / f"cut.{ext}").write_bytes(data[: len(data) // 2])
        with pytest.raises(LowlabelError, match=rf"cut\.{ext}: image is corrupt or truncated"):
            io.read_image(tmp_path / f"cut.{ext}")


def test_list_images_sorted_filtered_recursive(tmp_path: Path) -> None:
    names = ["b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.bmp", "notes.txt", ".hidden.png", "sub/e.jpeg"]
    for rel in [*names, ".cache/f.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in io.list_images(tmp_path)]
    assert found == ["a.JPG", "b.png", "sub/c.webp", "sub/deeper/d.bmp", "sub/e.jpeg"]
    assert [p.name for p in io.list_images(tmp_path, recursive=False)] == ["a.JPG", "b.png"]
    assert [p.name for p in io.list_images(tmp_path, exts=["png"])] == ["b.png"]
    with pytest.raises(LowlabelError, match="nope: image folder not found"):
        io.list_images(tmp_path / "nope")


def test_h5_round_trip_and_compression(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    image = np.random.default_rng(1).standard_normal((5, 6, 7)).astype(np.float32)
    label = (image > 0).astype(np.uint8)
    path = io.write_h5(tmp_path / "case" / "mri_norm2.h5", image=image, label=label)
    out = io.read_h5_volume(path)
    assert out["image"].dtype == np.float32 and out["label"].dtype == np.uint8
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["label"], label)
    with h5py.File(path, "r") as fh:
        assert fh["image"].compression == "gzip"
    assert os.listdir(path.parent) == ["mri_norm2.h5"]


def test_h5_errors(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    with pytest.raises(LowlabelError, match=r"gone\.h5: HDF5 file not found"):
        io.read_h5_volume(tmp_path / "gone.h5")
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(LowlabelError, match=r"empty\.h5: HDF5 file is empty"):
        io.read_h5_volume(tmp_path / "empty.h5")
    (tmp_path / "text.h5").write_text("not hdf5 at all")
    with pytest.raises(LowlabelError, match=r"text\.h5: not an HDF5 file"):
        io.read_h5_volume(tmp_path / "text.h5")
    io.write_h5(tmp_path / "k.h5", image=np.zeros((2, 2, 2), np.float32), mask=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(LowlabelError, match=r"k\.h5: has no dataset 'label'; keys present: image, mask"):
        io.read_h5_volume(tmp_path / "k.h5")
    io.write_h5(tmp_path / "flat.h5", image=np.zeros((4, 4), np.float32), label=np.zeros((4, 4), np.uint8))
    with pytest.raises(LowlabelError, match=r"flat\.h5: dataset 'image' has 2 dimensions \(4, 4\), expected 3"):
        io.read_h5_volume(tmp_path / "flat.h5")
    assert io.read_h5_volume(tmp_path / "flat.h5", ndim=None)["image"].shape == (4, 4)
    bad = np.zeros((2, 2, 2), np.float32)
    bad[0, 0, 0], bad[1, 1, 1] = np.nan, np.inf
    io.write_h5(tmp_path / "nan.h5", image=bad, label=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(LowlabelError, match=r"nan\.h5: dataset 'image' holds 2 NaN/inf values"):
        io.read_h5_volume(tmp_path / "nan.h5")
    big = np.random.default_rng(0).standard_normal((40, 40, 40)).astype(np.float32)
    io.write_h5(tmp_path / "big.h5", compression=None, image=big, label=np.zeros_like(big, np.uint8))
    data = (tmp_path / "big.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(LowlabelError, match=r"cut\.h5: HDF5 file is corrupt or truncated"):
        io.read_h5_volume(tmp_path / "cut.h5")


def test_write_h5_failure_leaves_nothing(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    io.write_h5(tmp_path / "v.h5", image=np.ones((2, 2, 2), np.float32))
    with pytest.raises(TypeError):
        io.write_h5(tmp_path / "v.h5", image=np.ones((2, 2, 2)), label=np.array([object()], dtype=object))
    assert os.listdir(tmp_path) == ["v.h5"]
    np.testing.assert_array_equal(io.read_h5_volume(tmp_path / "v.h5", keys=("image",))["image"], 1.0)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nifti_round_trip(tmp_path: Path, name: str) -> None:
    pytest.importorskip("nibabel")
    arr = np.random.default_rng(2).integers(0, 5, size=(4, 5, 6)).astype(np.int16)
    path = io.write_nifti(tmp_path / name, arr, (0.625, 0.625, 2.5))
    out, spacing = io.read_nifti(path)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, arr)
    assert spacing == pytest.approx((0.625, 0.625, 2.5))
    assert os.listdir(tmp_path) == [name]


def test_nifti_errors(tmp_path: Path) -> None:
    pytest.importorskip("nibabel")
    with pytest.raises(LowlabelError, match=r"v\.nii\.gz: NIfTI file not found"):
        io.read_nifti(tmp_path / "v.nii.gz")
    with pytest.raises(LowlabelError, match=r"v\.mha: a NIfTI file name must end in"):
        io.read_nifti(tmp_path / "v.mha")
    (tmp_path / "e.nii").write_bytes(b"")
    with pytest.raises(LowlabelError, match=r"e\.nii: NIfTI file is empty"):
        io.read_nifti(tmp_path / "e.nii")
    (tmp_path / "junk.nii").write_bytes(b"\x01" * 500)
    with pytest.raises(LowlabelError, match=r"junk\.nii: not a NIfTI file"):
        io.read_nifti(tmp_path / "junk.nii")
    io.write_nifti(tmp_path / "full.nii", np.ones((20, 20, 20), np.float32), (1.0, 1.0, 1.0))
    data = (tmp_path / "full.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) // 2])
    with pytest.raises(LowlabelError, match=r"cut\.nii: NIfTI file is corrupt or truncated"):
        io.read_nifti(tmp_path / "cut.nii")
    with pytest.raises(LowlabelError, match="one positive size per axis"):
        io.write_nifti(tmp_path / "s.nii", np.ones((2, 2, 2)), (1.0, 1.0))


@pytest.mark.realdata
def test_reads_a_real_la_case(shared_data: Path) -> None:
    pytest.importorskip("h5py")
    case = sorted(p for p in (shared_data / "la_heart").iterdir() if p.is_dir())[0]
    out = io.read_h5_volume(case / "mri_norm2.h5")
    assert out["image"].dtype == np.float32 and out["label"].dtype == np.uint8
    assert out["image"].shape == out["label"].shape and out["image"].ndim == 3
    assert set(np.unique(out["label"])) <= {0, 1}
