"""SGP in 2D (relative pose, spec "Teacher ... 2D" and "Students": CAPS): the task that `loop.run_rounds` drives.

teacher (SIFT + ratio test, later the student's descriptors at the SIFT keypoints + mutual nearest neighbours) ->
5-point RANSAC + recoverPose -> pseudo-label F -> verifier (>= 100 matches, inlier ratio >= 0.3) -> a CAPS student
trained with the epipolar + cycle loss under the pseudo-label F -> next teaching round. Labels are written in the
official 2D layout `labels/<bs|00|01>/<scene>/pseudo-label.log` (lines `i j num_inliers num_matches F00 .. F22`),
so a run stops and continues between rounds. The geometry world's scene is 'views': pair k is images 2k -> 2k + 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowlabel.data.synth.geometry import ImagePairConfig, image_pair
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.runtime import Runtime
from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.files import write_json
from lowlabel.methods.sgp import geometry, loop, teacher
from lowlabel.methods.sgp.labels import Label2D, label_path, read_labels_2d, round_name, write_labels_2d
from lowlabel.methods.sgp.losses import caps_loss
from lowlabel.methods.sgp.model import CAPSNet
from lowlabel.nn.imagenet import imagenet_normalize

VIEW_SCENE = "views"  # label-file scene of the geometry world's image pairs
POSE_THRESHOLD = 10.0  # degrees: rotation and angular translation recall (official 2D test)


@dataclass
class ViewWorldConfig:
    """Posed image pairs of the geometry world (lowlabel.data.synth.geometry.ImagePairConfig fields): n_train pairs
    from seeds [seed, k], n_test from [seed, n_train + k]."""

    n_train: int = 60
    n_test: int = 30
    seed: int = 0
    height: int = 160
    width: int = 208
    dot_cell: float = 0.04
    baseline: list[float] = field(default_factory=lambda: [0.15, 0.5])
    max_angle: float = 10.0

    def image_config(self) -> ImagePairConfig:
        return ImagePairConfig(height=self.height, width=self.width, dot_cell=self.dot_cell,
                               baseline=(self.baseline[0], self.baseline[1]), max_angle=self.max_angle)


@dataclass
class CAPSConfig:
    """CAPS student (official: ImageNet ResNet-50 U-Net, 128-d coarse and fine maps, window 0.125). Offline, the
    ImageNet encoder is MobileNetV2: backbone mobilenet_v2 with pretrained true (width then sets the decoder only)."""

    backbone: str = "resnet50"
    width: int = 64
    coarse_dim: int = 128
    fine_dim: int = 128
    window_size: float = 0.125
    pretrained: bool = False


@dataclass
class ImageDataConfig:
    """A user's image pairs in the MegaDepth layout (`lowlabel sgp train --images --data DIR`): the scene ids under
    the root (empty: every scene folder), the official teaching subset (`sample_rate` of each pairs.txt after the
    Random(15213) shuffle; 0.2 in config_sgp.yml), up to `test_pairs` of the pairs after it held out per folder for
    evaluation against img_cam.txt (none left: the training pairs are evaluated), `image_size` [H, W] to resize to
    (empty: as stored; a batch needs one size) and the image order the label indices refer to."""

    scenes: list[str] = field(default_factory=list)
    sample_rate: float = 0.2
    test_pairs: int = 100
    image_size: list[int] = field(default_factory=list)
    order: str = "listdir"


@dataclass
class Config2D:
    """Official 2D settings (`perception2d/config_sgp.yml`, CAPS `config.py`): up to 10,000 SIFT keypoints, ratio
    0.75 for the bootstrap, RANSAC threshold 1e-3, verifier 100 matches and ratio 0.3, 500 query points and 2
    pairs per step, Adam 1e-4 (halved every 80k steps: never within a 40k-step round), 2 meta-iterations."""

    num_kpts: int = 10_000
    ratio: float = 0.75
    threshold: float = 1e-3
    min_matches: int = teacher.MIN_MATCHES_2D
    min_inlier_ratio: float = teacher.MIN_INLIER_RATIO_2D
    num_queries: int = 500
    batch_pairs: int = 2
    meta_iters: int = 2
    finetune: bool = False
    supervised: bool = False  # oracle: F from the true poses, one round, no teacher
    world: ViewWorldConfig = field(default_factory=ViewWorldConfig)
    images: ImageDataConfig = field(default_factory=ImageDataConfig)
    student: CAPSConfig = field(default_factory=CAPSConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=40_000, log_every=50,
                                                                   checkpoint_every=5000))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-4))


@dataclass
class ViewPair:
    """Images i -> j of `scene`: uint8 (H, W, 3) images, intrinsics (3, 3), SIFT keypoints (N, 2) and descriptors
    (N, 128) per view; R (3, 3), t (3,) with x2 = R x1 + t when known, else None."""

    scene: str
    i: int
    j: int
    img1: np.ndarray
    img2: np.ndarray
    K1: np.ndarray
    K2: np.ndarray
    kp1: np.ndarray
    d1: np.ndarray
    kp2: np.ndarray
    d2: np.ndarray
    R: np.ndarray | None
    t: np.ndarray | None


def world_view_pairs(cfg: Config2D, split: str) -> list[ViewPair]:
    """Geometry-world image pairs of `split` ('train' or 'test') with their SIFT keypoints."""
    w = cfg.world
    ids = range(w.n_train) if split == "train" else range(w.n_train, w.n_train + w.n_test)
    out = []
    for k, seed in enumerate(ids):
        p = image_pair(np.random.default_rng([w.seed, seed]), w.image_config())
        (kp1, d1), (kp2, d2) = teacher.sift(p.img1, cfg.num_kpts), teacher.sift(p.img2, cfg.num_kpts)
        out.append(ViewPair(VIEW_SCENE, 2 * k, 2 * k + 1, p.img1, p.img2, p.K, p.K, kp1, d1, kp2, d2, p.R, p.t))
    return out


def build_student(cfg: Config2D) -> CAPSNet:
    s = cfg.student
    return CAPSNet(backbone=s.backbone, width=s.width, coarse_dim=s.coarse_dim, fine_dim=s.fine_dim,
                   window_size=s.window_size, pretrained=s.pretrained)


def image_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) images -> (B, 3, H, W) float32, ImageNet-normalised (CAPS input)."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return imagenet_normalize(x)


@torch.no_grad()
def describe(model: CAPSNet, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Student descriptors (N, coarse_dim + fine_dim) at keypoints (N, 2), eval mode: the coarse and fine parts
    each unit-normalised, then concatenated (the 256-d descriptor SGP matches)."""
    if len(keypoints) == 0:
        return np.zeros((0, model.coarse_dim + model.fine_dim), np.float32)
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    coord = torch.as_tensor(keypoints, dtype=torch.float32, device=device)[None]
    feats = model.extract_features(image_tensor([image]).to(device), coord)[0]
    out = torch.cat([torch.nn.functional.normalize(feats[:, :model.coarse_dim], dim=1),
                     torch.nn.functional.normalize(feats[:, model.coarse_dim:], dim=1)], 1)
    model.train(was)
    return out.cpu().numpy()


def teach(pairs: Sequence[ViewPair], model: CAPSNet | None, cfg: Config2D) -> list[teacher.TwoViewLabel]:
    """One teaching pass: SIFT descriptors with the ratio test (model None, the bootstrap) or the student's
    descriptors with mutual nearest neighbours, then the essential-matrix teacher."""
    out = []
    for p in pairs:
        if model is None:
            d1, d2, cross = p.d1, p.d2, False
        else:
            d1, d2, cross = describe(model, p.img1, p.kp1), describe(model, p.img2, p.kp2), True
        out.append(teacher.two_view_teacher(p.kp1, p.kp2, d1, d2, p.K1, p.K2, ratio=cfg.ratio, cross_check=cross,
                                            threshold=cfg.threshold))
    return out


def pose_errors(R: np.ndarray, t: np.ndarray, pair: ViewPair) -> tuple[float, float]:
    """(rotation error, angular translation error) in degrees; a failed estimate (t = 0) reads 180 for both."""
    if pair.R is None or pair.t is None:
        raise LowlabelError(f"pair {pair.scene} {pair.i}-{pair.j} has no ground-truth pose")
    if not np.linalg.norm(t) > 0:
        return 180.0, 180.0
    return float(geometry.rotation_error(R, pair.R)), float(geometry.angular_translation_error(t, pair.t))


def fundamental_pose_correct(F: np.ndarray, pair: ViewPair, threshold: float = POSE_THRESHOLD) -> bool:
    """Whether a pseudo-label F holds the true pose: one of the four (R, +-t) of E = K2^T F K1 within `threshold`
    degrees in rotation and translation direction (F alone cannot tell the cheirality)."""
    cv2 = require("cv2", "geometry", "decomposing a pseudo-label F")
    E = pair.K2.T @ F @ pair.K1
    if not np.isfinite(E).all() or np.linalg.norm(E) == 0:
        return False
    R1, R2, t = cv2.decomposeEssentialMat(E)
    return any(max(pose_errors(R, s * t.ravel(), pair)) < threshold for R in (R1, R2) for s in (1, -1))


def pose_rows(pairs: Sequence[ViewPair], model: CAPSNet | None, cfg: Config2D) -> list[dict[str, Any]]:
    """Per test pair: rotation and angular translation errors of the teacher's pose (SIFT or the student)."""
    rows = []
    for p, lab in zip(pairs, teach(pairs, model, cfg), strict=True):
        re, te = pose_errors(lab.R, lab.t, p)
        rows.append({"scene": p.scene, "i": p.i, "j": p.j, "rotation_error": re, "translation_error": te,
                     "num_matches": lab.num_matches, "num_inliers": lab.num_inliers})
    return rows


def pose_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Official 2D recalls (rotation < 10 degrees; translation direction < 10 degrees), reported separately, plus
    `test_recall` = share with both below 10 degrees, and the median errors."""
    re = np.array([r["rotation_error"] for r in rows])
    te = np.array([r["translation_error"] for r in rows])
    return {"test_recall": float(np.mean((re < POSE_THRESHOLD) & (te < POSE_THRESHOLD))),
            "rotation_recall": float(np.mean(re < POSE_THRESHOLD)),
            "translation_recall": float(np.mean(te < POSE_THRESHOLD)),
            "rotation_error_median": float(np.median(re)), "translation_error_median": float(np.median(te)),
            "test_rows": list(rows)}


class ViewBatches:
    """Batches of `cfg.batch_pairs` labelled pairs (img1, img2, SIFT keypoints of img1, F): images (B, 3, H, W)
    normalised, query points (B, num_queries, 2) half from img1's SIFT keypoints and half uniform over the image
    (CAPS `train_kp='mixed'`), F (B, 3, 3); order and queries drawn from (seed, epoch[, batch]), so a resumed run
    sees the batches of an uninterrupted one. No colour jitter (deviation: the world has no lighting change)."""

    def __init__(self, items: list[tuple[ViewPair, np.ndarray]], cfg: Config2D, *, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if not items:
            raise LowlabelError("no verified 2D pseudo-label to learn from: every pair has fewer than "
                                f"{cfg.min_matches} matches or an inlier ratio below {cfg.min_inlier_ratio}")
        self.items, self.cfg, self.seed, self.rank, self.world_size = items, cfg, seed, rank, world_size
        self.batch = min(cfg.batch_pairs, max(1, len(items) // world_size))
        self.steps_per_epoch = (len(items) // world_size) // self.batch

    def _queries(self, pair: ViewPair, rng: np.random.Generator) -> np.ndarray:
        n = self.cfg.num_queries
        h, w = pair.img1.shape[:2]
        n_kp = n // 2 if len(pair.kp1) else 0
        from_kp = pair.kp1[rng.integers(0, max(len(pair.kp1), 1), n_kp)] if n_kp else np.zeros((0, 2))
        uniform = rng.uniform(0, 1, (n - n_kp, 2)) * [w - 1, h - 1]
        return np.concatenate([from_kp, uniform])

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.items))[self.rank::self.world_size]
        for b in range(start, self.steps_per_epoch):
            rng = np.random.default_rng([self.seed, epoch, b, self.rank])
            chosen = [self.items[k] for k in order[b * self.batch:(b + 1) * self.batch]]
            yield (image_tensor([p.img1 for p, _ in chosen]), image_tensor([p.img2 for p, _ in chosen]),
                   torch.as_tensor(np.stack([self._queries(p, rng) for p, _ in chosen]), dtype=torch.float32),
                   torch.as_tensor(np.stack([F for _, F in chosen]), dtype=torch.float32))


def caps_step(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], step: int) -> dict[str, torch.Tensor]:
    """One CAPS step under the (pseudo-)F: {"epipolar": E_c + E_f, "cycle": 0.1 (C_c + C_f)} (their sum is L)."""
    im1, im2, coord1, fmatrix = batch
    out = caps_loss(coord1, model(im1, im2, coord1), fmatrix, im1.shape[2:])
    epipolar = out["epipolar_coarse"] + out["epipolar_fine"]
    return {"epipolar": epipolar, "cycle": out["loss"] - epipolar}


class RelativePoseTask:
    """The 2D side of `loop.run_rounds`: image pairs, SIFT / student teaching passes (or F from the true poses for
    the oracle), 2D label files, the official verifier, CAPS batches and the test pose recalls."""

    def __init__(self, cfg: Config2D, pairs: Sequence[ViewPair], test: Sequence[ViewPair]) -> None:
        self.cfg, self.pairs, self.test_pairs = cfg, list(pairs), list(test)
        self.step_fn = caps_step

    def teach(self, model: CAPSNet | None, meta: int) -> list[Label2D]:
        if self.cfg.supervised:
            if any(p.R is None for p in self.pairs):
                raise LowlabelError("supervised=true needs poses for every training pair")
            n = max(len(p.kp1) for p in self.pairs)
            return [Label2D(p.i, p.j, n, n, _true_fundamental(p)) for p in self.pairs]
        return [Label2D(p.i, p.j, lab.num_inliers, lab.num_matches, lab.F)
                for p, lab in zip(self.pairs, teach(self.pairs, model, self.cfg), strict=True)]

    def read_labels(self, root: Path, meta: int) -> list[Label2D] | None:
        by_key: dict[tuple[str, int, int], Label2D] = {}
        for scene in dict.fromkeys(p.scene for p in self.pairs):
            path = label_path(root, meta, scene)
            if not path.is_file():
                return None
            by_key.update({(scene, lab.i, lab.j): lab for lab in read_labels_2d(path)})
        missing = [p for p in self.pairs if (p.scene, p.i, p.j) not in by_key]
        if missing:
            raise LowlabelError(f"{label_path(root, meta, missing[0].scene)}: no label for pair {missing[0].i} "
                                f"{missing[0].j}; delete the round's label folder to teach it again")
        return [by_key[(p.scene, p.i, p.j)] for p in self.pairs]

    def write_labels(self, root: Path, meta: int, labels: Sequence[Label2D]) -> None:
        for scene in dict.fromkeys(p.scene for p in self.pairs):
            write_labels_2d(label_path(root, meta, scene),
                            [lab for p, lab in zip(self.pairs, labels, strict=True) if p.scene == scene])

    def verified(self, label: Label2D) -> bool:
        return bool(teacher.verify_2d(label.num_inliers, label.num_matches, self.cfg.min_matches,
                                      self.cfg.min_inlier_ratio))

    def label_correct(self, index: int, label: Label2D) -> bool | None:
        pair = self.pairs[index]
        return None if pair.R is None else fundamental_pose_correct(label.F, pair)

    def teacher_name(self, meta: int) -> str:
        return "ground truth" if self.cfg.supervised else ("SIFT" if meta == -1 else f"student {round_name(meta - 1)}")

    def build_model(self) -> CAPSNet:
        return build_student(self.cfg)

    def batches(self, kept: Sequence[tuple[int, Label2D]], meta: int, runtime: Runtime) -> ViewBatches:
        return ViewBatches([(self.pairs[k], lab.F) for k, lab in kept], self.cfg,
                           seed=self.cfg.train.seed + 7 * (meta + 1), rank=runtime.rank,
                           world_size=runtime.world_size)

    def test(self, model: CAPSNet) -> dict[str, Any]:
        return pose_metrics(pose_rows(self.test_pairs, model, self.cfg))


def _true_fundamental(pair: ViewPair) -> np.ndarray:
    """F of the true pose, scaled to F[2, 2] = 1 as the teacher's labels."""
    F = geometry.fundamental_from_essential(geometry.skew(pair.t) @ pair.R, pair.K1, pair.K2)
    return F / F[2, 2]


def train_model(cfg: Config2D, *, run_dir: Path, runtime: Runtime, resume: bool,
                train_pairs: Sequence[ViewPair] | None = None,
                test_pairs: Sequence[ViewPair] | None = None) -> tuple[CAPSNet, dict]:
    """The 2D SGP loop (or the oracle when cfg.supervised) on `train_pairs`, evaluated on `test_pairs` (None: the
    geometry world's); run_dir gets the label files, one folder per round and summary.json with the per-round table."""
    test = list(test_pairs) if test_pairs is not None else world_view_pairs(cfg, "test")
    pairs = list(train_pairs) if train_pairs is not None else world_view_pairs(cfg, "train")
    task = RelativePoseTask(cfg, pairs, test)
    rounds = [-1] if cfg.supervised else [-1, *range(cfg.meta_iters)]
    model, records = loop.run_rounds(task, rounds, finetune=cfg.finetune, seed=cfg.train.seed, train=cfg.train,
                                     optim=cfg.optim, run_dir=Path(run_dir), runtime=runtime, resume=resume)
    summary = {"rounds": records, "final_test_recall": records[-1]["test_recall"]}
    if runtime.is_main:
        write_json(Path(run_dir) / "summary.json", summary)
    return model, summary


def with_steps(cfg: Config2D, steps: int) -> Config2D:
    """`cfg` with rounds of `steps` optimiser steps each."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=steps))
