"""SGP readers on tiny files written here (3DMatch fragments, poses, overlaps.txt, gt.log; MegaDepth cameras and
pairs), their errors, and (realdata) the official 3DMatch pairs in ../shared/data/3dmatch_pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from lowlabel.errors import LowlabelError
from lowlabel.methods.sgp.data import (
    fragment_index,
    list_fragments,
    megadepth_folders,
    pair_transform,
    read_fragment,
    read_fragment_pair,
    read_gt_log,
    read_img_cam,
    read_info_pose,
    read_megadepth_scene,
    read_overlaps,
    read_pair_list,
    read_ply,
    teaching_subset,
)
from lowlabel.methods.sgp.geometry import apply_transform, make_transform


def write_ply(path: Path, pts: np.ndarray, fmt: str) -> None:
    """A PLY with x, y, z (float), normals (double) and colours (uchar) per vertex, plus a face element after it."""
    n = len(pts)
    header = (f"ply\nformat {fmt} 1.0\ncomment written by the test\nelement vertex {n}\nproperty float x\n"
              "property float y\nproperty float z\nproperty double nx\nproperty double ny\nproperty double nz\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nelement face 0\n"
              "property list uchar int vertex_indices\nend_header\n")
    if fmt == "ascii":
        rows = "".join(f"{x} {y} {z} 0 0 1 255 0 0\n" for x, y, z in pts)
        path.write_bytes(header.encode() + rows.encode())
        return
    order = "<" if fmt == "binary_little_endian" else ">"
    dt = np.dtype([(c, order + "f4") for c in "xyz"] + [(c, order + "f8") for c in ("nx", "ny", "nz")]
                  + [(c, "u1") for c in ("r", "g", "b")])
    table = np.zeros(n, dt)
    for k, c in enumerate("xyz"):
        table[c] = pts[:, k]
    path.write_bytes(header.encode() + table.tobytes())


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_read_ply_formats(tmp_path: Path, fmt: str) -> None:
    pts = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    write_ply(tmp_path / "cloud_bin_3.ply", pts, fmt)
    got = read_ply(tmp_path / "cloud_bin_3.ply")
    np.testing.assert_allclose(got, pts, rtol=1e-6 if fmt == "ascii" else 0)
    assert got.dtype == np.float64


def test_read_ply_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.ply"
    path.write_bytes(b"not a ply")
    with pytest.raises(LowlabelError, match="not a PLY file"):
        read_ply(path)
    write_ply(path, np.zeros((5, 3), np.float32), "binary_little_endian")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(LowlabelError, match="truncated"):
        read_ply(path)
    path.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n1 2\n")
    with pytest.raises(LowlabelError, match="x, y and z are needed"):
        read_ply(path)


def test_read_fragment_npy_npz_and_errors(tmp_path: Path) -> None:
    pts = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "cloud_bin_0.npy", pts.astype(np.float32))
    np.savez(tmp_path / "cloud_bin_1.npz", pcd=pts)
    np.testing.assert_array_equal(read_fragment(tmp_path / "cloud_bin_0.npy"), pts)
    np.testing.assert_array_equal(read_fragment(tmp_path / "cloud_bin_1.npz"), pts)
    np.savez(tmp_path / "bad.npz", points=pts)
    with pytest.raises(LowlabelError, match="no array 'pcd'"):
        read_fragment(tmp_path / "bad.npz")
    np.save(tmp_path / "flat.npy", pts.ravel())
    with pytest.raises(LowlabelError, match="N x 3"):
        read_fragment(tmp_path / "flat.npy")
    nan = pts.copy()
    nan[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(LowlabelError, match="NaN"):
        read_fragment(tmp_path / "nan.npy")
    (tmp_path / "cloud.txt").write_text("1 2 3\n")
    with pytest.raises(LowlabelError, match="unknown fragment format"):
        read_fragment(tmp_path / "cloud.txt")


def write_info(path: Path, P: np.ndarray) -> None:
    rows = "".join("\t".join(f" {v:.8e}" for v in row) + "\t\n" for row in P)
    path.write_text(f"7-scenes-test\t seq-01\t 0\t 49\t\n{rows}")


def pose(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_transform(Rotation.random(random_state=rng).as_matrix(), rng.normal(size=3))


def test_fragment_pair_pose_is_inv_dst_times_src(tmp_path: Path) -> None:
    scene = tmp_path / "scene"
    scene.mkdir()
    world = np.random.default_rng(1).normal(size=(30, 3))
    P_src, P_dst = pose(2), pose(3)  # fragment -> world poses
    src = apply_transform(world, np.linalg.inv(P_src))
    dst = apply_transform(world, np.linalg.inv(P_dst))
    np.save(scene / "cloud_bin_2.npy", src)
    write_ply(scene / "cloud_bin_10.ply", dst.astype(np.float32), "binary_little_endian")
    write_info(scene / "cloud_bin_2.info.txt", P_src)
    write_info(scene / "cloud_bin_10.info.txt", P_dst)
    np.testing.assert_allclose(read_info_pose(scene / "cloud_bin_2.info.txt"), P_src, atol=1e-7)
    assert list(list_fragments(scene)) == [2, 10]
    pair = read_fragment_pair(scene, 2, 10)
    assert pair.T is not None
    np.testing.assert_allclose(apply_transform(pair.source, pair.T), pair.target, atol=1e-5)
    np.testing.assert_allclose(pair_transform(P_src, P_dst), np.linalg.inv(P_dst) @ P_src)
    (scene / "cloud_bin_10.info.txt").unlink()
    assert read_fragment_pair(scene, 2, 10).T is None
    with pytest.raises(LowlabelError, match="no fragment cloud_bin_5"):
        read_fragment_pair(scene, 5, 2)
    (scene / "cloud_bin_2.info.txt").write_text("header\n1 0 0 0\n0 1 0\n")
    with pytest.raises(LowlabelError, match="line 3: 3 numbers"):
        read_info_pose(scene / "cloud_bin_2.info.txt")


def test_overlaps_and_fragment_index(tmp_path: Path) -> None:
    path = tmp_path / "overlaps.txt"
    path.write_text("cloud_bin_0.ply cloud_bin_1.ply 0.71\n\ncloud_bin_0.ply cloud_bin_12.ply 0.12\n"
                    "cloud_bin_3.ply cloud_bin_4.ply 0.3\n")
    assert read_overlaps(path) == [(0, 1, 0.71), (0, 12, 0.12), (3, 4, 0.3)]
    assert read_overlaps(path, min_overlap=0.3) == [(0, 1, 0.71), (3, 4, 0.3)]
    assert fragment_index("a/b/cloud_bin_42.ply") == 42
    path.write_text("cloud_bin_0.ply cloud_bin_1.ply\n")
    with pytest.raises(LowlabelError, match="line 1"):
        read_overlaps(path)


def test_gt_log_gives_the_inverse_matrix(tmp_path: Path) -> None:
    M1, M2 = pose(4), pose(5)
    block = "".join(f"{i}\t{j}\t57\n" + "".join("\t".join(f"{v:.10f}" for v in r) + "\n" for r in M)
                    for i, j, M in ((0, 1, M1), (3, 20, M2)))
    path = tmp_path / "gt.log"
    path.write_text(block)
    pairs = read_gt_log(path)
    assert [(p.i, p.j, p.n) for p in pairs] == [(0, 1, 57), (3, 20, 57)]
    np.testing.assert_allclose(pairs[1].T @ M2, np.eye(4), atol=1e-9)
    path.write_text(block + "1\t2\t57\n")
    with pytest.raises(LowlabelError, match="blocks of 5"):
        read_gt_log(path)


def test_img_cam_pairs_and_megadepth_scene(tmp_path: Path) -> None:
    aligned = tmp_path / "0000" / "dense0" / "aligned"
    (aligned / "images").mkdir(parents=True)
    for name in ("b.jpg", "a.jpg", "c.jpg"):
        (aligned / "images" / name).write_bytes(b"")
    R = Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix()
    line = "{} 640 480 500.0 510.0 320.5 240.5 " + " ".join(repr(float(v)) for v in R.ravel()) + " 1.0 2.0 3.0\n"
    (aligned / "img_cam.txt").write_text("# comment\n" + "".join(line.format(f"{n}.jpg") for n in "abc"))
    (aligned / "pairs.txt").write_text("a.jpg b.jpg\nc.jpg a.jpg\n")
    cams = read_img_cam(aligned / "img_cam.txt")
    cam = cams["b.jpg"]
    np.testing.assert_array_equal(cam.K, [[500, 0, 320.5], [0, 510, 240.5], [0, 0, 1]])
    np.testing.assert_array_equal(cam.T[:3, :3], R)
    np.testing.assert_array_equal(cam.T[:3, 3], [1, 2, 3])
    assert (cam.width, cam.height) == (640, 480)
    scene = read_megadepth_scene(aligned, order="sorted")
    assert scene.names == ["a.jpg", "b.jpg", "c.jpg"]
    np.testing.assert_array_equal(scene.pairs, [[0, 1], [2, 0]])
    listed = read_megadepth_scene(aligned)  # os.listdir order, whatever the file system gives
    assert sorted(listed.names) == scene.names
    assert [listed.names[k] for k in listed.pairs[0]] == ["a.jpg", "b.jpg"]
    assert megadepth_folders(tmp_path, ["0000"]) == [aligned]
    (aligned / "pairs.txt").write_text("a.jpg d.jpg\n")
    with pytest.raises(LowlabelError, match="not in images"):
        read_megadepth_scene(aligned)
    test_cam = tmp_path / "img_cam_test.txt"
    test_cam.write_text(line.format("0015 x.jpg"))
    assert list(read_img_cam(test_cam, with_sequence=True)) == [("0015", "x.jpg")]
    with pytest.raises(LowlabelError, match="line 1: 20 values, expected 19"):
        read_img_cam(test_cam)
    (tmp_path / "pairs_test.txt").write_text("0015 x.jpg y.jpg\n")
    assert read_pair_list(tmp_path / "pairs_test.txt", with_sequence=True) == [("0015", "x.jpg", "y.jpg")]


def test_teaching_subset_follows_the_official_shuffle() -> None:
    import random

    arr = np.arange(37)
    random.Random(15213).shuffle(arr)  # the official code shuffles a numpy array in place
    np.testing.assert_array_equal(teaching_subset(37, 0.2), arr[:7])
    assert len(teaching_subset(10, 1.0)) == 10
    with pytest.raises(LowlabelError, match="sample_rate"):
        teaching_subset(10, 0.0)


# --------------------------------------------------------------------------------------------------- real data

REAL_PAIRS = [("7-scenes-redkitchen", 0, 5), ("sun3d-home_at-home_at_scan1_2013_jan_1", 38, 41),
              ("sun3d-hotel_umd-maryland_hotel3", 8, 15)]


@pytest.mark.realdata
@pytest.mark.parametrize(("scene", "i", "j"), REAL_PAIRS)
def test_real_3dmatch_pairs_overlap_under_their_pose(shared_data: Path, scene: str, i: int, j: int) -> None:
    pair = read_fragment_pair(shared_data / "3dmatch_pairs" / scene, i, j)
    assert pair.T is not None and len(pair.source) > 10_000
    moved = apply_transform(pair.source, pair.T)
    near_src = (cKDTree(pair.target).query(moved)[0] < 0.05).mean()
    near_tgt = (cKDTree(moved).query(pair.target)[0] < 0.05).mean()
    unposed = (cKDTree(pair.target).query(pair.source)[0] < 0.05).mean()
    inverse = (cKDTree(pair.target).query(apply_transform(pair.source, np.linalg.inv(pair.T)))[0] < 0.05).mean()
    # the README's 23-63% is the share of TARGET points within 5 cm of the moved source (23.6 / 47.3 / 63.5%); the
    # share of source points is 17.6 / 48.8 / 56.6%; unposed 3-12% (6.0 / 8.6 / 11.0%)
    assert 0.23 <= near_tgt <= 0.64
    assert 0.17 <= near_src <= 0.63
    assert 0.03 <= unposed <= 0.12
    assert inverse < 0.05  # the other composition order, inv(P_src) @ P_dst, does not align them
