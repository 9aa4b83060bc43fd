"""2D SGP on a user's image pairs in the MegaDepth layout (CAPS "release-light", spec "Datasets"), the job of
`lowlabel sgp train --images`: `<root>/<scene>/dense<k>/aligned/{images/, img_cam.txt, pairs.txt}`, or one `aligned`
folder.

Per aligned folder, pairs.txt is shuffled with random.Random(15213) (official `_deterministic_shuffle_`): the first
`sample_rate` share is what the teaching passes visit (and the students learn from once verified); up to `test_pairs`
of the rest are held out and scored against the poses of img_cam.txt, which the training never reads (the oracle
aside). Label files go to `labels/<round>/<scene>/dense<k>/aligned/pseudo-label.log` with i, j indexing images/ in
`os.listdir` order, as the official code writes them. `Config` and `train` follow the recipe contract, so
`engine.rundir.train_run` runs this module as it runs a recipe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lowlabel.data.io import read_image
from lowlabel.engine.runtime import Runtime
from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.methods.sgp import geometry, teacher, two_view
from lowlabel.methods.sgp.data import megadepth_folders, read_megadepth_scene, teaching_subset

Config = two_view.Config2D


def aligned_folders(data: Path, scenes: list[str]) -> list[Path]:
    """`data` itself when it is an `aligned` folder (it holds img_cam.txt), else the `<scene>/dense<k>/aligned`
    folders under it, of `scenes` or of every scene folder."""
    data = Path(data)
    if (data / "img_cam.txt").is_file():
        return [data]
    if not data.is_dir():
        raise LowlabelError(f"{data}: not a folder; give a MegaDepth root (<scene>/dense<k>/aligned/) or an aligned "
                            "folder with images/, img_cam.txt and pairs.txt")
    ids = list(scenes) or sorted(d.name for d in data.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not ids:
        raise LowlabelError(f"{data}: no scene folder and no img_cam.txt here; expected <scene>/dense<k>/aligned/")
    return megadepth_folders(data, ids)


def resized_view(image: np.ndarray, K: np.ndarray, size: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(image, K) resized to size [H, W] (empty: unchanged): K maps to the new pixel grid, whose pixel centres keep
    OpenCV's convention x' + 0.5 = (x + 0.5) W' / W."""
    if not size:
        return image, K
    if len(size) != 2 or min(size) < 1:
        raise LowlabelError(f"images.image_size={size}: give [height, width] in pixels, or [] to keep the size")
    cv2 = require("cv2", "geometry", "resizing images")
    h, w = image.shape[:2]
    sy, sx = size[0] / h, size[1] / w
    scale = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA), scale @ K


def folder_pairs(folder: Path, scene: str, cfg: Config) -> tuple[list[two_view.ViewPair], list[two_view.ViewPair]]:
    """(teaching pairs, held-out test pairs) of one aligned folder; every image is read and SIFT'ed once."""
    md = read_megadepth_scene(folder, cfg.images.order)
    order = teaching_subset(len(md.pairs), 1.0)
    n_teach = len(teaching_subset(len(md.pairs), cfg.images.sample_rate))
    views: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def view(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if k not in views:
            image, K = resized_view(read_image(folder / "images" / md.names[k]), md.cameras[k].K,
                                    cfg.images.image_size)
            views[k] = (image, K, *teacher.sift(image, cfg.num_kpts))
        return views[k]

    def pair(index: int) -> two_view.ViewPair:
        i, j = (int(v) for v in md.pairs[index])
        (img1, K1, kp1, d1), (img2, K2, kp2, d2) = view(i), view(j)
        T = geometry.relative_pose(md.cameras[i].T, md.cameras[j].T)  # x2 = R x1 + t, the official GT pose
        return two_view.ViewPair(scene, i, j, img1, img2, K1, K2, kp1, d1, kp2, d2, T[:3, :3], T[:3, 3])

    return ([pair(k) for k in order[:n_teach]],
            [pair(k) for k in order[n_teach:n_teach + max(cfg.images.test_pairs, 0)]])


def image_pairs(data: Path, cfg: Config) -> tuple[list[two_view.ViewPair], list[two_view.ViewPair]]:
    """(teaching pairs, test pairs) of every aligned folder under `data`; the test pairs are the teaching pairs when
    no pair is held out. All images must share one size (set images.image_size otherwise)."""
    train: list[two_view.ViewPair] = []
    test: list[two_view.ViewPair] = []
    for folder in aligned_folders(data, cfg.images.scenes):
        scene = folder.name if folder == Path(data) else folder.relative_to(data).as_posix()
        a, b = folder_pairs(folder, scene, cfg)
        train += a
        test += b
    if not train:
        raise LowlabelError(f"{data}: no pair to teach: pairs.txt lists too few pairs for images.sample_rate="
                            f"{cfg.images.sample_rate} (int(rate x pairs) of each folder are taught)")
    sizes = {p.img1.shape for p in train} | {p.img2.shape for p in train}
    if len(sizes) > 1:
        raise LowlabelError(f"{data}: images of {len(sizes)} sizes {sorted(s[:2] for s in sizes)[:3]}; a batch needs "
                            "one size: set images.image_size=[H,W] (e.g. --set images.image_size=[480,640])")
    return train, test or train


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """The 2D SGP loop (or the oracle when cfg.supervised) on the image pairs under `data` (None: the geometry
    world's image pairs); run_dir gets the label files, a folder per round and summary.json."""
    if data is None:
        return two_view.train_model(cfg, run_dir=run_dir, runtime=runtime, resume=resume)[1]
    train_pairs, test_pairs = image_pairs(data, cfg)
    return two_view.train_model(cfg, run_dir=run_dir, runtime=runtime, resume=resume, train_pairs=train_pairs,
                                test_pairs=test_pairs)[1]
