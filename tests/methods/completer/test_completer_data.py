"""The official .mat reader on files the test writes, input checks, and the real files when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import scipy.sparse as sp

from lowlabel.errors import LowlabelError
from lowlabel.methods.completer.data import check_views, load_mat

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "completer"


def cell(*arrays: object) -> np.ndarray:
    out = np.empty((1, len(arrays)), dtype=object)
    for i, a in enumerate(arrays):
        out[0, i] = a
    return out


def three_views(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.random((n, d)) for d in (20, 59, 40)]


def test_scene_layout_takes_views_0_and_1_and_shifts_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    views = three_views(12, rng)
    y = rng.integers(1, 4, (12, 1)).astype(np.uint8)
    sio.savemat(tmp_path / "Scene-15.mat", {"X": cell(*views), "Y": y})
    data = load_mat(tmp_path / "Scene-15.mat")
    assert data.name == "scene15" and len(data.views) == 2
    np.testing.assert_allclose(data.views[0], views[0].astype(np.float32))
    np.testing.assert_allclose(data.views[1], views[1].astype(np.float32))
    assert data.views[0].dtype == np.float32
    np.testing.assert_array_equal(data.labels, y[:, 0].astype(np.int64) - 1)


def test_landuse_layout_takes_views_1_and_2_shuffled_by_seed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    views = three_views(30, rng)
    views[2] = sp.csr_matrix(np.where(views[2] > 0.5, views[2], 0.0))  # sparse cells are densified
    y = (np.arange(30) % 5 + 1).reshape(-1, 1).astype(np.uint8)
    sio.savemat(tmp_path / "LandUse_21.mat", {"X": cell(*views), "Y": y})
    a = load_mat(tmp_path / "LandUse_21.mat", shuffle_seed=0)
    b = load_mat(tmp_path / "LandUse_21.mat", shuffle_seed=0)
    c = load_mat(tmp_path / "LandUse_21.mat", shuffle_seed=1)
    assert a.name == "landuse21" and [v.shape[1] for v in a.views] == [59, 40]
    np.testing.assert_array_equal(a.views[0], b.views[0])  # deterministic
    assert not np.array_equal(a.labels, c.labels)
    # rows stay aligned: find every shuffled row in the original and check its label and other view
    dense2 = views[2].toarray()
    for i in range(30):
        src = int(np.argmin(np.abs(views[1] - a.views[0][i]).sum(axis=1)))
        assert a.labels[i] == y[src, 0] - 1
        np.testing.assert_allclose(a.views[1][i], dense2[src].astype(np.float32))


def test_caltech_layout_min_max_scales_views_3_and_4(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    views = [rng.normal(0, 5, (8, d)) for d in (3, 4, 5, 6, 7, 2)]
    sio.savemat(tmp_path / "Caltech101-20.mat", {"X": cell(*views), "Y": np.arange(8).reshape(-1, 1) % 2 + 1})
    data = load_mat(tmp_path / "Caltech101-20.mat")
    for got, raw in zip(data.views, (views[3], views[4]), strict=True):
        np.testing.assert_allclose(got, ((raw - raw.min()) / (raw.max() - raw.min())).astype(np.float32), atol=1e-6)


def test_noisymnist_layout_clusters_tune_and_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arrays = {k: rng.random((n, 784)) for k, n in
              (("X1", 5), ("X2", 5), ("XV1", 3), ("XV2", 3), ("XTe1", 4), ("XTe2", 4))}
    labels = {"trainLabel": np.zeros((5, 1)), "tuneLabel": np.array([[1], [2], [3]]),
              "testLabel": np.array([[0], [4], [5], [6]])}
    sio.savemat(tmp_path / "NoisyMNIST.mat", {**arrays, **labels})
    data = load_mat(tmp_path / "NoisyMNIST.mat")
    assert data.views[0].shape == (7, 784)
    np.testing.assert_allclose(data.views[1][3:], arrays["XTe2"].astype(np.float32))
    np.testing.assert_array_equal(data.labels, [1, 2, 3, 0, 4, 5, 6])  # min label 0: no shift


def test_foreign_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    sio.savemat(tmp_path / "Scene-15.mat", {"features": np.ones((3, 3))})
    with pytest.raises(LowlabelError, match="keys"):
        load_mat(tmp_path / "Scene-15.mat")
    sio.savemat(tmp_path / "mine.mat", {"X": cell(np.ones((3, 2)), np.ones((3, 2))), "Y": np.ones((3, 1))})
    with pytest.raises(LowlabelError, match="layout"):
        load_mat(tmp_path / "mine.mat")
    with pytest.raises(LowlabelError, match="cell"):
        load_mat(tmp_path / "mine.mat", layout="scene15")
    with pytest.raises(LowlabelError, match="does not exist"):
        load_mat(tmp_path / "absent.mat")
    bad = three_views(4, np.random.default_rng(0))
    bad[0][1, 2] = np.nan
    sio.savemat(tmp_path / "Scene-15.mat", {"X": cell(*bad), "Y": np.ones((4, 1))})
    with pytest.raises(LowlabelError, match="NaN or inf"):
        load_mat(tmp_path / "Scene-15.mat")


def test_check_views_names_the_problem() -> None:
    ok = np.ones((4, 3), dtype=np.float32)
    check_views([ok, ok], np.zeros(4))
    with pytest.raises(LowlabelError, match="inf"):
        check_views([ok, np.full((4, 2), np.inf)])
    with pytest.raises(LowlabelError, match="at least one row"):
        check_views([ok, np.ones((0, 2))])
    with pytest.raises(LowlabelError, match="disagree"):
        check_views([ok, np.ones((5, 2))])
    with pytest.raises(LowlabelError, match="labels"):
        check_views([ok, ok], np.zeros(3))
    with pytest.raises(LowlabelError, match="two views"):
        check_views([ok])


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "n", "dims", "k"), [("Scene-15", 4485, [20, 59], 15), ("LandUse-21", 2100, [59, 40], 21)]
)
def test_real_files(name: str, n: int, dims: list[int], k: int) -> None:
    path = DATA / f"{name}.mat"
    if not path.is_file():
        pytest.skip(f"{path} not found: the official files live at ../shared/data/completer/")
    data = load_mat(path)
    assert [v.shape for v in data.views] == [(n, d) for d in dims]
    assert data.n_clusters == k and data.labels.min() == 0
