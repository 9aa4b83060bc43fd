"""Bad input to SGP's readers: pseudo-label files (2D and 3D, official layout), 3DMatch fragments (.ply, .npy, .npz),
.info.txt poses, overlaps.txt, gt.log, MegaDepth img_cam.txt and pairs.txt, each of any bytes or truncated, and
`lowlabel sgp train --images` on a MegaDepth folder whose image is any bytes or a truncated PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sweep_harness import expect_clear_error, expect_cli_error

from lowlabel.methods.sgp.data import (
    read_fragment,
    read_gt_log,
    read_img_cam,
    read_info_pose,
    read_overlaps,
    read_pair_list,
)
from lowlabel.methods.sgp.labels import (
    Label2D,
    Label3D,
    read_labels_2d,
    read_labels_3d,
    write_labels_2d,
    write_labels_3d,
)

TEXT_READERS = {
    "pseudo-label.log (2D)": read_labels_2d,
    "pseudo-label.log (3D)": read_labels_3d,
    "cloud_bin_0.info.txt": read_info_pose,
    "overlaps.txt": read_overlaps,
    "gt.log": read_gt_log,
    "img_cam.txt": read_img_cam,
}


def _valid_text(name: str, folder: Path) -> bytes:
    """A valid file of each text format (written by our writers or by hand in the official layout)."""
    path = folder / "valid"
    if name.endswith("(2D)"):
        write_labels_2d(path, [Label2D(0, 1, 40, 120, np.arange(9.0).reshape(3, 3))])
    elif name.endswith("(3D)"):
        write_labels_3d(path, [Label3D(0, 1, 0.5, np.eye(4))])
    elif name == "cloud_bin_0.info.txt":
        path.write_text("scene 0 0 50\n" + "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    elif name == "overlaps.txt":
        path.write_text("cloud_bin_0.ply cloud_bin_1.ply 0.5\n")
    elif name == "gt.log":
        path.write_text("0\t1\t5\n" + "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    else:
        path.write_text("a.jpg 640 480 500 500 320 240 1 0 0 0 1 0 0 0 1 0 0 0\n")
    return path.read_bytes()


@given(st.sampled_from(sorted(TEXT_READERS)), st.binary(max_size=300))
def test_text_file_of_any_bytes(tmp_path_factory, name, content):
    path = tmp_path_factory.mktemp("sgp") / name.split(" ")[0]
    path.write_bytes(content)
    expect_clear_error(f"sgp: {name}, any bytes", lambda: TEXT_READERS[name](path), path.name, valid_ok=True)


@given(st.sampled_from(sorted(TEXT_READERS)), st.floats(0.05, 0.95))
def test_truncated_text_file(tmp_path_factory, name, fraction):
    folder = tmp_path_factory.mktemp("sgp")
    data = _valid_text(name, folder)
    path = folder / name.split(" ")[0]
    path.write_bytes(data[: int(len(data) * fraction)])
    expect_clear_error(f"sgp: truncated {name}", lambda: TEXT_READERS[name](path), path.name, valid_ok=True)


@given(st.binary(max_size=300))
def test_pair_list_of_any_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("sgp") / "pairs.txt"
    path.write_bytes(content)
    expect_clear_error("sgp: pairs.txt, any bytes", lambda: read_pair_list(path), path.name, valid_ok=True)


@given(st.sampled_from(["ply", "npy", "npz"]), st.binary(max_size=400))
def test_fragment_of_any_bytes(tmp_path_factory, suffix, content):
    path = tmp_path_factory.mktemp("sgp") / f"cloud_bin_0.{suffix}"
    path.write_bytes(content)
    expect_clear_error(f"sgp: .{suffix} fragment, any bytes", lambda: read_fragment(path), path.name)


@given(st.sampled_from(["npy", "npz"]), st.floats(0.05, 0.95))
def test_truncated_fragment(tmp_path_factory, suffix, fraction):
    path = tmp_path_factory.mktemp("sgp") / f"cloud_bin_0.{suffix}"
    points = np.random.default_rng(0).normal(size=(50, 3))
    buffer = io.BytesIO()
    np.save(buffer, points) if suffix == "npy" else np.savez(buffer, pcd=points)
    data = buffer.getvalue()
    path.write_bytes(data[: int(len(data) * fraction)])
    expect_clear_error(f"sgp: truncated .{suffix} fragment", lambda: read_fragment(path), path.name)


def _megadepth_with_image(folder: Path, content: bytes) -> Path:
    """An aligned folder of one pair a.png -> b.png whose a.png holds `content`."""
    (folder / "images").mkdir(parents=True)
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(folder / "images" / "b.png")
    (folder / "images" / "a.png").write_bytes(content)
    camera = "32 32 40 40 15.5 15.5 1 0 0 0 1 0 0 0 1 0 0 0"
    (folder / "img_cam.txt").write_text(f"a.png {camera}\nb.png {camera}\n")
    (folder / "pairs.txt").write_text("a.png b.png\n")
    return folder / "images" / "a.png"


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@given(st.one_of(st.binary(max_size=200), st.floats(0.05, 0.95).map(lambda f: _png_bytes()[: int(f * 400)])))
def test_train_images_on_a_broken_image(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("sgp")
    image = _megadepth_with_image(root / "aligned", content)
    expect_cli_error("sgp: train --images, broken image", ["sgp", "train", "--images", "--data", root / "aligned",
                     "--set", "images.sample_rate=1.0", "--out", root / "runs", "--threads", "1"], image.name,
                     run_root=root / "runs")
