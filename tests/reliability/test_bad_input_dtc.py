"""Bad input to DTC's readers and commands: corrupt or truncated HDF5/NIfTI cases, wrong shapes, NaN/Inf intensities,
labels outside {0, 1}, empty labels, list files naming missing cases or not UTF-8, and failing writes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from sweep_harness import expect_clear_error, expect_cli_error

from lowlabel.data.io import write_h5, write_nifti
from lowlabel.engine.config import save_config
from lowlabel.methods.dtc import recipe
from lowlabel.methods.dtc.data import read_la_case, read_list

SHAPE = (24, 24, 20)


def _volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[6:16, 5:15, 4:12] = 1
    return image, label


def _root(tmp_path_factory) -> Path:
    """An empty dataset folder whose train.list names the one case the test writes, `case`."""
    root = tmp_path_factory.mktemp("la")
    (root / "train.list").write_text("case\n")
    return root


def _in(root: Path, *files: str) -> list[str]:
    """Full paths of `files` of case `case`: an error must name the very file."""
    return [str(root / "case" / f) for f in files]


def _dataset(root: Path, n_train: int = 3) -> list[str]:
    """A valid own-format dataset: cases c0..c{n_train-1} (train) and t0 (test), all HDF5 with labels."""
    names = [f"c{i}" for i in range(n_train)] + ["t0"]
    for i, name in enumerate(names):
        image, label = _volume(i)
        write_h5(root / name / "mri_norm2.h5", image=image, label=label)
    (root / "train.list").write_text("\n".join(names[:-1]) + "\n")
    (root / "test.list").write_text("t0\n")
    return names


@given(st.binary(max_size=300))
def test_case_file_of_any_bytes(tmp_path_factory, content):
    root = _root(tmp_path_factory)
    (root / "case").mkdir()
    (root / "case" / "mri_norm2.h5").write_bytes(content)
    expect_clear_error("dtc: HDF5 case, any bytes", lambda: read_la_case(root, "case"), _in(root, "mri_norm2.h5"))


@given(st.floats(0.0, 0.98), st.sampled_from(["h5", "nifti"]))
def test_truncated_case(tmp_path_factory, fraction, kind):
    root = _root(tmp_path_factory)
    image, label = _volume()
    if kind == "h5":
        path = write_h5(root / "case" / "mri_norm2.h5", image=image, label=label)
    else:
        write_nifti(root / "case" / "label.nii.gz", label, (1.0, 1.0, 1.0))
        path = write_nifti(root / "case" / "image.nii.gz", image, (1.0, 1.0, 1.0))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    expect_clear_error(f"dtc: truncated {kind} case", lambda: read_la_case(root, "case"), str(path))


@given(st.sampled_from([(24, 20), (2, 24, 24, 20), (24, 24, 20, 1), (5,)]), st.sampled_from(["h5", "nifti"]))
def test_image_of_wrong_rank(tmp_path_factory, shape, kind):
    root = _root(tmp_path_factory)
    image = np.ones(shape, dtype=np.float32)
    label = np.ones(shape, dtype=np.uint8)
    if kind == "h5":
        write_h5(root / "case" / "mri_norm2.h5", image=image, label=label)
        name = "mri_norm2.h5"
    else:
        write_nifti(root / "case" / "image.nii.gz", image, (1.0,) * len(shape))
        write_nifti(root / "case" / "label.nii.gz", label, (1.0,) * len(shape))
        name = "image.nii.gz"
    expect_clear_error("dtc: image rank", lambda: read_la_case(root, "case"), _in(root, name))


@given(st.sampled_from([np.nan, np.inf, -np.inf]), st.tuples(*(st.integers(0, s - 1) for s in SHAPE)),
       st.sampled_from(["h5", "nifti"]))
def test_non_finite_intensity(tmp_path_factory, value, where, kind):
    root = _root(tmp_path_factory)
    image, label = _volume()
    image[where] = value
    if kind == "h5":
        write_h5(root / "case" / "mri_norm2.h5", image=image, label=label)
    else:
        write_nifti(root / "case" / "image.nii.gz", image, (1.0, 1.0, 1.0))
        write_nifti(root / "case" / "label.nii.gz", label, (1.0, 1.0, 1.0))
    expect_clear_error("dtc: NaN/Inf intensity", lambda: read_la_case(root, "case", labelled=False),
                       _in(root, "mri_norm2.h5", "image.nii.gz"))


@given(st.integers(-300, 300).filter(lambda v: v not in (0, 1)), st.tuples(*(st.integers(0, s - 1) for s in SHAPE)))
def test_label_outside_0_1(tmp_path_factory, value, where):
    root = _root(tmp_path_factory)
    image, label = _volume()
    label = label.astype(np.int16)
    label[where] = value
    write_h5(root / "case" / "mri_norm2.h5", image=image, label=label)
    expect_clear_error("dtc: label values", lambda: read_la_case(root, "case"), _in(root, "mri_norm2.h5"))


@given(st.sampled_from([np.uint8, np.float32, np.int16]), st.sampled_from(["h5", "nifti"]))
def test_empty_label(tmp_path_factory, dtype, kind):
    root = _root(tmp_path_factory)
    image, _ = _volume()
    empty = np.zeros(SHAPE, dtype=dtype)
    if kind == "h5":
        write_h5(root / "case" / "mri_norm2.h5", image=image, label=empty)
    else:
        write_nifti(root / "case" / "image.nii.gz", image, (1.0, 1.0, 1.0))
        write_nifti(root / "case" / "label.nii.gz", empty, (1.0, 1.0, 1.0))
    expect_clear_error("dtc: empty label", lambda: read_la_case(root, "case"),
                       _in(root, "mri_norm2.h5", "label.nii.gz"))


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1,
                        max_size=12), min_size=1, max_size=4))
def test_list_naming_missing_cases(tmp_path_factory, names):
    root = tmp_path_factory.mktemp("la")
    _dataset(root)
    (root / "train.list").write_text("c0\n" + "\n".join(f"missing-{n}" for n in names) + "\n", encoding="utf-8")
    expect_clear_error("dtc: list names missing case", lambda: read_list(root, "train"), str(root / "train.list"))


@given(st.binary(min_size=1, max_size=60).filter(lambda b: not _utf8(b)))
def test_list_not_utf8(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("la")
    _dataset(root)
    (root / "test.list").write_bytes(b"t0\n" + content)
    expect_clear_error("dtc: list not UTF-8", lambda: read_list(root, "test"), str(root / "test.list"))


def _utf8(content: bytes) -> bool:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _break(path: Path, how: str) -> None:
    image, label = _volume()
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "nan":
        image[0, 0, 0] = np.nan
        write_h5(path, image=image, label=label)
    elif how == "label 255":
        write_h5(path, image=image, label=label * 255)
    elif how == "empty label":
        write_h5(path, image=image, label=np.zeros_like(label))
    elif how == "2-D":
        write_h5(path, image=image[:, :, 0], label=label[:, :, 0])
    elif how == "no label":
        write_h5(path, image=image)
    elif how == "gzip junk":
        path.write_bytes(gzip.compress(b"not hdf5"))


@given(st.sampled_from(["truncated", "nan", "label 255", "empty label", "2-D", "no label", "gzip junk"]),
       st.sampled_from(["c0", "t0"]))
def test_train_on_a_broken_case(tmp_path_factory, how, case):
    root = tmp_path_factory.mktemp("la")
    _dataset(root)
    _break(root / case / "mri_norm2.h5", how)
    runs = tmp_path_factory.mktemp("runs")
    expect_cli_error("dtc: train on a broken case", ["dtc", "train", "--data", str(root), "--labelled", "1",
                                                     "--iterations", "1", "--n-filters", "2", "--set",
                                                     "patch=[16,16,16]", "--out", str(runs), "--device", "cpu"],
                     case, run_root=runs)


def _checkpoint(root: Path) -> Path:
    cfg = recipe.Config(n_filters=2, patch=[16, 16, 16], stride=[8, 8, 8])
    save_config(cfg, root / "run" / "config.yaml")
    path = root / "run" / "checkpoints" / "step_00000001.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": recipe.build_model(cfg).state_dict()}, path)
    return path


@given(st.sampled_from(["nifti", "h5"]))
def test_segment_into_an_unwritable_folder(tmp_path_factory, fmt):
    root = tmp_path_factory.mktemp("seg")
    ckpt = _checkpoint(root)
    image, _ = _volume()
    volume = write_h5(root / "scan.h5", image=image)
    blocker = root / "a file"
    blocker.write_text("in the way")
    expect_cli_error("dtc: segment, failing write", ["dtc", "segment", str(ckpt), str(volume), "--format", fmt,
                                                     "--out", str(blocker / "masks"), "--device", "cpu"],
                     "scan_mask", run_root=root)


def test_eval_overlay_into_an_unwritable_folder(tmp_path):
    ckpt = _checkpoint(tmp_path)
    _dataset(tmp_path / "la")
    blocker = tmp_path / "a file"
    blocker.write_text("in the way")
    expect_cli_error("dtc: eval overlay, failing write", ["dtc", "eval", str(ckpt), "--data", str(tmp_path / "la"),
                                                          "--overlay", "t0", "--out", str(blocker / "plots"),
                                                          "--device", "cpu"], "t0_overlay.png", run_root=tmp_path)
