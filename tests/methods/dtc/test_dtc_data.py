"""DTC data: the LA layout reader on files the test writes, NIfTI, bad inputs, augmentation/crop, 2+2 batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lowlabel.data.io import write_h5, write_nifti
from lowlabel.errors import LowlabelError
from lowlabel.methods.dtc import data

LA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "la_heart"


def _write_case(root: Path, name: str, shape: tuple[int, int, int] = (20, 18, 12), **override: np.ndarray) -> None:
    rng = np.random.default_rng(len(name))
    image = rng.standard_normal(shape).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[5:12, 4:10, 3:8] = 1
    arrays = {"image": image, "label": label, **override}
    write_h5(root / name / "mri_norm2.h5", **arrays)


def test_reader_round_trip_and_official_subfolder(tmp_path: Path) -> None:
    root = tmp_path / data.LA_SUBDIR
    for name in ("CASEA", "CASEB"):
        _write_case(root, name)
    (root / "train.list").write_text("CASEA\n\nCASEB\n")
    assert data.read_list(tmp_path, "train") == ["CASEA", "CASEB"]
    case = data.read_la_case(tmp_path, "CASEB")
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    assert case.image.shape == (20, 18, 12) and int(case.label.sum()) == 7 * 6 * 5
    half = data.read_la_case(tmp_path, "CASEB", scale=0.5)
    assert half.image.shape == half.label.shape == (10, 9, 6)
    assert int(half.label.sum()) > 0


def test_bad_cases_are_clear_errors(tmp_path: Path) -> None:
    _write_case(tmp_path, "GOOD")
    (tmp_path / "train.list").write_text("GOOD\nMISSING\n")
    with pytest.raises(LowlabelError, match="MISSING"):
        data.read_list(tmp_path, "train")
    _write_case(tmp_path, "SHAPE", label=np.zeros((20, 18, 11), dtype=np.uint8))
    with pytest.raises(LowlabelError, match="differs from image shape"):
        data.read_la_case(tmp_path, "SHAPE")
    _write_case(tmp_path, "LAB255", label=np.full((20, 18, 12), 255, dtype=np.uint8))
    with pytest.raises(LowlabelError, match="255"):
        data.read_la_case(tmp_path, "LAB255")
    nan_image = np.zeros((20, 18, 12), dtype=np.float32)
    nan_image[0, 0, 0] = np.nan
    _write_case(tmp_path, "NAN", image=nan_image)
    with pytest.raises(LowlabelError, match="NaN"):
        data.read_la_case(tmp_path, "NAN")
    with pytest.raises(LowlabelError, match=r"train\.list"):
        data.la_root(tmp_path / "nowhere")


def test_unlabelled_cases_need_no_label_and_nifti_cases_read(tmp_path: Path) -> None:
    image = np.random.default_rng(0).standard_normal((20, 18, 12)).astype(np.float32)
    label = np.zeros((20, 18, 12), dtype=np.uint8)
    label[2:6, 3:9, 4:7] = 1
    write_h5(tmp_path / "only image" / "mri_norm2.h5", image=image)
    write_nifti(tmp_path / "nii-case" / "image.nii.gz", image, (1.0, 1.0, 1.0))
    write_nifti(tmp_path / "nii-case" / "label.nii.gz", label, (1.0, 1.0, 1.0))
    write_nifti(tmp_path / "nii-unlabelled" / "image.nii", image, (1.0, 1.0, 1.0))
    (tmp_path / "train.list").write_text("nii-case\nonly image\nnii-unlabelled\n")
    assert data.read_list(tmp_path, "train") == ["nii-case", "only image", "nii-unlabelled"]
    case = data.read_la_case(tmp_path, "nii-case")
    np.testing.assert_array_equal(case.image, image)
    assert case.label.dtype == np.uint8 and int(case.label.sum()) == 4 * 6 * 3
    for name in ("only image", "nii-unlabelled"):
        unlabelled = data.read_la_case(tmp_path, name, labelled=False)
        assert unlabelled.label is None and unlabelled.image.shape == (20, 18, 12)
    with pytest.raises(LowlabelError, match="has no dataset 'label'"):
        data.read_la_case(tmp_path, "only image")
    with pytest.raises(LowlabelError, match=r"label\.nii\.gz: missing"):
        data.read_la_case(tmp_path, "nii-unlabelled")
    # an unlabelled case in a batch: zero label patch, same crop as with a label
    patch_img, patch_lab = data.augment_crop(image, None, (16, 16, 16), np.random.default_rng(1))
    with_label, _ = data.augment_crop(image, label, (16, 16, 16), np.random.default_rng(1))
    assert np.array_equal(patch_img, with_label) and not patch_lab.any()


def test_volume_stem_names_masks_after_the_case() -> None:
    assert data.volume_stem(Path("/d/case 7/mri_norm2.h5")) == "case 7"
    assert data.volume_stem(Path("/d/case8/image.nii.gz")) == "case8"
    assert data.volume_stem(Path("/d/scan.v2.nii.gz")) == "scan.v2"
    assert data.volume_stem(Path("/d/scan.h5")) == "scan"


def test_list_and_label_mistakes(tmp_path: Path) -> None:
    _write_case(tmp_path, "EMPTY", label=np.zeros((20, 18, 12), dtype=np.uint8))
    (tmp_path / "train.list").write_text("EMPTY\n")
    with pytest.raises(LowlabelError, match="no foreground"):
        data.read_la_case(tmp_path, "EMPTY")
    assert data.read_la_case(tmp_path, "EMPTY", labelled=False).label is None
    (tmp_path / "train.list").write_bytes(b"EMPTY\n\xff\xfe\n")
    with pytest.raises(LowlabelError, match="not UTF-8"):
        data.read_list(tmp_path, "train")
    (tmp_path / "train.list").write_text("\n \n")
    with pytest.raises(LowlabelError, match="names no case"):
        data.read_list(tmp_path, "train")


def test_read_volume_nifti_and_nan(tmp_path: Path) -> None:
    image = np.random.default_rng(0).standard_normal((9, 8, 7)).astype(np.float32)
    write_nifti(tmp_path / "a.nii.gz", image, (0.5, 0.5, 2.0))
    got, spacing = data.read_volume(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(got, image)
    assert spacing == (0.5, 0.5, 2.0)
    image[1, 1, 1] = np.inf
    write_nifti(tmp_path / "b.nii", image, (1.0, 1.0, 1.0))
    with pytest.raises(LowlabelError, match="NaN/inf"):
        data.read_volume(tmp_path / "b.nii")
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(LowlabelError, match="unknown volume format"):
        data.read_volume(tmp_path / "c.txt")


def test_augment_crop_pads_small_volumes_and_keeps_pairs() -> None:
    rng = np.random.default_rng(0)
    image = np.arange(10 * 6 * 4, dtype=np.float32).reshape(10, 6, 4) + 1
    label = (image % 2).astype(np.uint8)
    for _ in range(10):
        img, lab = data.augment_crop(image, label, (8, 8, 8), rng)
        assert img.shape == lab.shape == (8, 8, 8)
        assert np.array_equal(lab, np.where(img > 0, img % 2, 0).astype(np.uint8))  # padding is 0 in both


def test_scaled_patch_multiple_of_16() -> None:
    assert data.scaled_patch([112, 112, 80], 1.0) == [112, 112, 80]
    assert data.scaled_patch([112, 112, 80], 0.5) == [48, 48, 32]
    assert data.scaled_patch([112, 112, 80], 0.1) == [16, 16, 16]


def test_two_stream_batches_layout_and_determinism() -> None:
    def case(i: int) -> data.Case:
        return data.Case(f"c{i}", np.full((20, 20, 20), float(i), dtype=np.float32), np.zeros((20, 20, 20), np.uint8))

    labelled, unlabelled = [case(i) for i in range(4)], [case(i) for i in range(10, 15)]
    batches = data.TwoStreamBatches(labelled, unlabelled, (16, 16, 16), seed=3)
    assert batches.steps_per_epoch == 2
    epoch = list(batches.epoch(1))
    image, label = epoch[0]
    assert image.shape == (4, 1, 16, 16, 16) and label.shape == (4, 16, 16, 16) and label.dtype == torch.int64
    ids = [int(v) for b in epoch for v in b[0][:, 0, 0, 0, 0]]
    assert sorted(ids[0:2] + ids[4:6]) == [0, 1, 2, 3] and all(v >= 10 for v in ids[2:4] + ids[6:8])
    again = list(batches.epoch(1, start=1))
    assert torch.equal(again[0][0], epoch[1][0])
    with pytest.raises(LowlabelError, match="labelled"):
        data.TwoStreamBatches(labelled[:1], unlabelled, (16, 16, 16))


def test_real_la_case_reads() -> None:
    if not LA.is_dir():
        pytest.skip(f"{LA} not found: the official LA h5 files live at ../shared/data/la_heart")
    names = data.read_list(LA, "test")
    assert len(names) == 8
    case = data.read_la_case(LA, names[0])
    assert case.image.ndim == 3 and set(np.unique(case.label).tolist()) == {0, 1}
