"""Bad input to COMPLETER's reader (`data.load_mat`) and commands (`lowlabel completer cluster`, `lowlabel train
completer`): truncated and corrupt .mat files, wrong shapes, NaN/Inf, bad labels, missing views, impossible
settings and a full disk. Each must be a LowlabelError naming the file (exit 2 through the CLI) with nothing
half-written left; labels with absent or one-sample classes are valid (labels only score the clusters)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from hypothesis import given
from hypothesis import strategies as st
from sweep_harness import COUNTS, expect_clear_error, expect_cli_error

from lowlabel.methods.completer.data import load_mat

N = 12
TINY = ["--seeds", "1", "--set", "train.max_steps=2", "--set", "model.hidden=[8]", "--set",
        "model.predictor_hidden=[8]", "--set", "data.batch_size=4", "--device", "cpu", "--threads", "1"]


def cell(*arrays: object) -> np.ndarray:
    out = np.empty((1, len(arrays)), dtype=object)
    for i, a in enumerate(arrays):
        out[0, i] = a
    return out


def good_views(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((N, 3)), rng.random((N, 4))]


def write(path: Path, x: object, y: object | None = None) -> Path:
    sio.savemat(path, {"X": x, **({} if y is None else {"Y": y})})
    return path


def good_file(folder: Path, name: str = "my views.mat") -> Path:
    return write(folder / name, cell(*good_views()), (np.arange(N) % 3 + 1).reshape(-1, 1))


@given(st.data())
def test_truncated_file(tmp_path_factory, data):
    path = good_file(tmp_path_factory.mktemp("trunc"))
    raw = path.read_bytes()
    path.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
    # a cut exactly between X and Y leaves a valid file without labels
    expect_clear_error("completer: truncated .mat", lambda: load_mat(path), path, valid_ok=True)


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupt_bytes(tmp_path_factory, flips):
    path = good_file(tmp_path_factory.mktemp("corrupt"))
    raw = bytearray(path.read_bytes())
    for at, value in flips:
        raw[at % len(raw)] = value
    path.write_bytes(bytes(raw))
    expect_clear_error("completer: corrupt .mat", lambda: load_mat(path), path, valid_ok=True)


def test_a_corrupt_type_code_that_crashes_scipy(tmp_path):
    """A byte that makes scipy's parser segfault (found by the sweep): the child process dies, not the caller."""
    path = good_file(tmp_path)
    raw = bytearray(path.read_bytes())
    second_cell_data_tag = raw.index(bytes([9, 0, 0, 0]), raw.index(bytes([9, 0, 0, 0])) + 8)
    raw[second_cell_data_tag] = 110
    path.write_bytes(bytes(raw))
    message = expect_clear_error("completer: corrupt .mat", lambda: load_mat(path), path)
    assert "corrupt" in message


shapes = st.tuples(st.integers(0, 5), st.integers(0, 4), st.integers(0, 5), st.integers(0, 4)).filter(
    lambda s: s[0] != s[2] or 0 in s)


@given(shapes)
def test_wrong_shapes(tmp_path_factory, shape):
    rows1, cols1, rows2, cols2 = shape
    views = cell(np.ones((rows1, cols1)), np.ones((rows2, cols2)))
    path = write(tmp_path_factory.mktemp("shape") / "shapes.mat", views)
    expect_clear_error("completer: wrong shapes", lambda: load_mat(path), path)


@given(st.sampled_from(["one view", "no view", "matrix", "3-d view", "text view", "no X"]))
def test_missing_or_malformed_views(tmp_path_factory, kind):
    path = tmp_path_factory.mktemp("views") / "views.mat"
    x = {"one view": cell(np.ones((N, 3))), "no view": np.empty((1, 0), dtype=object), "matrix": np.ones((N, 3)),
         "3-d view": cell(np.ones((N, 3, 2)), np.ones((N, 3))),
         "text view": cell(np.array(["ab"] * N), np.ones((N, 3)))}
    if kind == "no X":
        sio.savemat(path, {"features": np.ones((N, 3))})
    else:
        write(path, x[kind])
    expect_clear_error("completer: missing views", lambda: load_mat(path), path)


@given(st.integers(0, 1), st.integers(0, N - 1), st.integers(0, 2), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_nan_or_inf(tmp_path_factory, view, row, col, value):
    views = good_views()
    views[view][row, col % views[view].shape[1]] = value
    path = write(tmp_path_factory.mktemp("nan") / "nan.mat", cell(*views))
    expect_clear_error("completer: NaN/Inf", lambda: load_mat(path), path)


labels = st.one_of(
    st.integers(0, 2 * N).filter(lambda n: n != N).map(lambda n: np.ones((n, 1))),
    st.integers(0, N - 1).map(lambda i: np.where(np.arange(N) == i, np.nan, 1.0).reshape(-1, 1)),
    st.integers(0, N - 1).map(lambda i: np.where(np.arange(N) == i, 1.5, 1.0).reshape(-1, 1)),
)


@given(labels)
def test_bad_labels(tmp_path_factory, y):
    path = write(tmp_path_factory.mktemp("labels") / "labels.mat", cell(*good_views()), y)
    expect_clear_error("completer: bad labels", lambda: load_mat(path), path)


@given(st.lists(st.integers(1, 6), min_size=N, max_size=N))
def test_absent_and_one_sample_classes_are_valid(tmp_path_factory, ids):
    path = write(tmp_path_factory.mktemp("classes") / "classes.mat", cell(*good_views()), np.array(ids)[:, None])
    COUNTS["completer: absent/one-sample classes (valid)"]["tried"] += 1
    data = load_mat(path)
    assert data.n_clusters == len(set(ids))
    COUNTS["completer: absent/one-sample classes (valid)"]["accepted (valid)"] += 1


@given(st.sampled_from(["corrupt", "views", "unlabelled", "rate", "clusters"]))
def test_cluster_command(tmp_path_factory, problem):
    root = tmp_path_factory.mktemp("cli")
    path = good_file(root)
    args, names = ["completer", "cluster", path, "--out", root / "runs", *TINY], [path.name]
    if problem == "corrupt":
        path.write_bytes(path.read_bytes()[:300])
    elif problem == "views":
        args += ["--views", "0,5"]
    elif problem == "unlabelled":
        write(path, cell(*good_views()))
        names.append("n-clusters")
    elif problem == "rate":
        args += ["--missing-rate", "0.95"]  # 1 complete sample of 12
    else:
        args += ["--n-clusters", str(N + 1)]
    expect_cli_error("completer: cluster command", args, names, run_root=root / "runs")
    assert not (root / "runs").exists() or not any((root / "runs").rglob("*.*"))


@given(st.sampled_from(["corrupt", "unlabelled"]))
def test_train_command(tmp_path_factory, problem):
    root = tmp_path_factory.mktemp("train")
    path = good_file(root)
    if problem == "corrupt":
        path.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    else:
        write(path, cell(*good_views()))
    expect_cli_error("completer: train command", ["train", "completer", "--data", path, "--out", root / "runs",
                                                  "--device", "cpu"], path.name, run_root=root / "runs")


@given(st.integers(3, 7))
def test_full_disk(tmp_path_factory, failing_write):
    """The k-th atomic write fails with ENOSPC: a clear error naming the file, no temporary left, and the run
    folder either gone (no checkpoint yet) or resumable (it holds a checkpoint). Writes 1-2 are open_run's."""
    root = tmp_path_factory.mktemp("disk")
    path = good_file(root)
    calls = {"n": 0}
    real_replace = os.replace

    def replace(src: object, dst: object) -> None:
        calls["n"] += 1
        if calls["n"] == failing_write:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", replace)
        expect_cli_error("completer: full disk", ["completer", "cluster", path, "--out", root / "runs", *TINY],
                         "No space left")
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]
    for run in (root / "runs" / "completer").glob("*") if (root / "runs" / "completer").exists() else []:
        assert list(run.rglob("step_*.pt")) and (run / "run.json").is_file(), sorted(run.rglob("*"))
