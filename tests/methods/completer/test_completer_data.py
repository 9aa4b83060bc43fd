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
    sio.savemat(tmp_path / "mine.mat", {"features": np.ones((3, 2))})
    with pytest.raises(LowlabelError, match="generic layout"):
        load_mat(tmp_path / "mine.mat")
    sio.savemat(tmp_path / "mine.mat", {"X": cell(np.ones((3, 2)), np.ones((3, 2))), "Y": np.ones((3, 1))})
    with pytest.raises(LowlabelError, match="1x3 cell"):
        load_mat(tmp_path / "mine.mat", layout="scene15")
    with pytest.raises(LowlabelError, match="does not exist"):
        load_mat(tmp_path / "absent.mat")
    bad = three_views(4, np.random.default_rng(0))
    bad[0][1, 2] = np.nan
    sio.savemat(tmp_path / "Scene-15.mat", {"X": cell(*bad), "Y": np.ones((4, 1))})
    with pytest.raises(LowlabelError, match="NaN or inf"):
        load_mat(tmp_path / "Scene-15.mat")


def test_generic_layout_reads_any_file_name_and_number_of_views(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    views = [rng.random((10, d)) for d in (3, 5, 2)]
    y = np.array([[7, 7, 3, 3, 3, 9, 9, 9, 9, 3]])  # a 1 x n row, ids with gaps: only scored, never shifted
    sio.savemat(tmp_path / "my views.mat", {"X": cell(*views[:2]), "Y": y})
    two = load_mat(tmp_path / "my views.mat")
    assert two.name == "generic" and [v.shape for v in two.views] == [(10, 3), (10, 5)]
    np.testing.assert_array_equal(two.labels, y[0])
    assert two.n_clusters == 3
    sio.savemat(tmp_path / "three.mat", {"X": cell(*views)})
    three = load_mat(tmp_path / "three.mat")
    assert len(three.views) == 3 and three.labels is None
    with pytest.raises(LowlabelError, match="n-clusters"):
        _ = three.n_clusters
    picked = load_mat(tmp_path / "three.mat", views=[2, 0])
    np.testing.assert_allclose(picked.views[0], views[2].astype(np.float32))
    np.testing.assert_allclose(picked.views[1], views[0].astype(np.float32))
    for bad in ([0, 0], [0, 3], [1]):
        with pytest.raises(LowlabelError, match=r"three\.mat"):
            load_mat(tmp_path / "three.mat", views=bad)
    # an official file under another name: its layout by content is generic (all cells), or named explicitly
    sio.savemat(tmp_path / "scene.mat", {"X": cell(*three_views(6, rng)), "Y": np.arange(1, 7).reshape(-1, 1)})
    assert len(load_mat(tmp_path / "scene.mat").views) == 3
    assert [v.shape[1] for v in load_mat(tmp_path / "scene.mat", layout="scene15").views] == [20, 59]


def test_labels_must_be_one_integer_per_sample(tmp_path: Path) -> None:
    views = cell(np.ones((4, 2)), np.ones((4, 3)))
    cases = ((np.ones((3, 1)), "3 label"), (np.array([[1.0], [2.5], [1.0], [2.0]]), "non-integer"),
             (np.array([[1.0], [np.nan], [1.0], [2.0]]), "NaN"), (np.array(["a", "b", "c", "d"]), "integers"))
    for y, problem in cases:
        sio.savemat(tmp_path / "own.mat", {"X": views, "Y": y})
        with pytest.raises(LowlabelError, match=problem):
            load_mat(tmp_path / "own.mat")


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
