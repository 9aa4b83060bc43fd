"""SGP recipe (3D): the alternating loop of spec "Method" around the engine's Trainer, with the official defaults.

teacher (FPFH, later the student's descriptors) -> RANSAC + ICP pseudo-labels -> verifier (confidence >= 0.3) ->
FCGF student trained with the hardest-contrastive loss on the verified pseudo-transforms -> next teaching round.
Round folders under a run: `labels/<bs|00|01>/<scene>/pseudo-label.log` (official layout) and `rounds/<bs|00|01>/`
(the Trainer's checkpoints); a resumed run reads the label files it finds and continues the round it was in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from lowlabel.data.synth.geometry import CloudConfig, point_cloud_pair
from lowlabel.engine.demo import SmokeCase
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.runtime import Runtime
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json
from lowlabel.methods.sgp import geometry, loop, teacher
from lowlabel.methods.sgp.data import list_fragments, pair_transform, read_fragment, read_info_pose, read_overlaps
from lowlabel.methods.sgp.labels import Label3D, label_path, read_labels_3d, round_name, write_labels_3d
from lowlabel.methods.sgp.losses import hardest_contrastive_loss
from lowlabel.methods.sgp.model import FCGFNet

WORLD_SCENE = "geometry"  # label-file scene of the geometry world: pair k is fragments 2k (source) and 2k + 1


@dataclass
class WorldConfig:
    """The geometry world used when no --data is given (lowlabel.data.synth.geometry.CloudConfig fields): n_train
    pairs from seeds [seed, k], n_test pairs from [seed, n_train + k]."""

    n_train: int = 200
    n_test: int = 100
    seed: int = 0
    n_points: int = 4096
    noise: float = 0.005
    overlap: list[float] = field(default_factory=lambda: [0.4, 0.8])
    max_angle: float = 180.0
    max_translation: float = 1.0

    def cloud_config(self) -> CloudConfig:
        return CloudConfig(n_points=self.n_points, noise=self.noise, overlap=(self.overlap[0], self.overlap[1]),
                           max_angle=self.max_angle, max_translation=self.max_translation)


@dataclass
class StudentConfig:
    """FCGF ResUNetBN2C widths (official: 32/64/128/256, decoder 64/64/64/128, 32-d, first kernel 5, BN 0.05)."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    tr_channels: list[int] = field(default_factory=lambda: [64, 64, 64, 128])
    out_channels: int = 32
    conv1_kernel_size: int = 5
    bn_momentum: float = 0.05


@dataclass
class Config:
    """Official 3D defaults (spec "Teacher ... 3D", "Students": FCGF) of `perception3d/config_sgp.yml` + FCGF."""

    voxel_size: float = 0.05
    positive_radius: float = 2.0  # positives: voxels within 2 voxel sizes under the (pseudo-)transform
    batch_pairs: int = 8  # pairs per step (the official DataLoader batch, hard-coded to 8)
    num_pos: int = 4096  # sampled positives per step (1024 x config batch_size 4)
    num_hn_samples: int = 1024  # hardest-negative candidates per side (256 x 4)
    pos_margin: float = 0.1
    neg_margin: float = 1.4
    augment_angle: float = 360.0  # each cloud gets an independent random rotation up to this angle (degrees)
    meta_iters: int = 2  # teaching rounds after the bootstrap (bs, 00, 01)
    finetune: bool = False  # False: each round trains the student from scratch (official default)
    min_confidence: float = 0.3  # verifier (overlap_thr)
    ransac_iter: int = 10_000
    orient: str = "auto"  # FPFH normals towards: origin (sensor frames, 3DMatch) | centroid | auto (world: centroid)
    min_overlap: float = 0.3  # pairs taught from overlaps.txt need a listed overlap >= this (official)
    supervised: bool = False  # oracle: the ground-truth transforms as labels, one round, no teacher
    world: WorldConfig = field(default_factory=WorldConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=100, log_every=20, checkpoint_every=500))
    # SGD lr 0.1, momentum 0.8, weight decay 1e-4, lr x 0.99 per epoch (ExponentialLR)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="sgd", lr=0.1, momentum=0.8, weight_decay=1e-4, schedule="exponential", gamma=0.99))


def build_model(cfg: Config) -> torch.nn.Module:
    """The FCGF student of `cfg.student` (one all-ones input channel, unit-norm descriptors)."""
    s = cfg.student
    return FCGFNet(in_channels=1, out_channels=s.out_channels, conv1_kernel_size=s.conv1_kernel_size,
                   bn_momentum=s.bn_momentum, channels=s.channels, tr_channels=s.tr_channels)


# ------------------------------------------------------------------------------------------------------ pairs


@dataclass
class Pair:
    """Fragments i -> j of `scene`: raw source (N, 3) and target (M, 3) points; T_gt (4, 4) source -> target when
    known (world, .info.txt poses), else None."""

    scene: str
    i: int
    j: int
    source: np.ndarray
    target: np.ndarray
    T_gt: np.ndarray | None


def world_pairs(world: WorldConfig, split: str) -> list[Pair]:
    """Geometry-world pairs of `split` ('train' or 'test'); pair k is fragments 2k -> 2k + 1 of scene 'geometry'."""
    ids = range(world.n_train) if split == "train" else range(world.n_train, world.n_train + world.n_test)
    out = []
    for k, seed in enumerate(ids):
        p = point_cloud_pair(np.random.default_rng([world.seed, seed]), world.cloud_config())
        out.append(Pair(WORLD_SCENE, 2 * k, 2 * k + 1, p.source.astype(np.float64), p.target.astype(np.float64),
                        geometry.make_transform(p.R, p.t)))
    return out


def scene_pairs(scene_dir: Path, min_overlap: float) -> list[tuple[int, int]]:
    """The (i, j) pairs of a 3DMatch scene folder: its overlaps.txt (overlap >= min_overlap), else every i < j."""
    if (scene_dir / "overlaps.txt").is_file():
        return [(i, j) for i, j, _ in read_overlaps(scene_dir / "overlaps.txt", min_overlap)]
    ids = list(list_fragments(scene_dir))
    return [(a, b) for n, a in enumerate(ids) for b in ids[n + 1:]]


def fragment_pairs(root: Path, min_overlap: float = 0.3) -> list[Pair]:
    """Every pair of every scene folder under `root` (a folder of `cloud_bin_<i>` fragments, or a folder of such
    folders); T_gt = inv(P_j) @ P_i where both cloud_bin_<i>.info.txt poses exist."""
    root = Path(root)
    if not root.is_dir():
        raise LowlabelError(f"--data {root}: folder not found")
    scenes = [root] if any(root.glob("cloud_bin_*")) else sorted(d for d in root.iterdir()
                                                                  if d.is_dir() and any(d.glob("cloud_bin_*")))
    if not scenes:
        raise LowlabelError(f"{root}: no cloud_bin_<i>.ply/.npz/.npy fragments in it or in its sub-folders")
    out = []
    for scene_dir in scenes:
        frags = list_fragments(scene_dir)
        name = "." if scene_dir == root else scene_dir.name
        for i, j in scene_pairs(scene_dir, min_overlap):
            infos = [scene_dir / f"cloud_bin_{k}.info.txt" for k in (i, j)]
            T = pair_transform(*(read_info_pose(p) for p in infos)) if all(p.is_file() for p in infos) else None
            out.append(Pair(name, i, j, read_fragment(frags[i]), read_fragment(frags[j]), T))
    if not out:
        raise LowlabelError(f"{root}: no fragment pairs (each scene needs two fragments, or overlaps.txt pairs)")
    return out


def load_pairs(cfg: Config, data: Path | None, split: str) -> list[Pair]:
    """Training ('train') or evaluation ('test') pairs: the geometry world, or every pair under `data` for both
    (self-supervised training sees no poses; evaluation needs them)."""
    if data is None:
        return world_pairs(cfg.world, split)
    pairs = fragment_pairs(Path(data), cfg.min_overlap)
    if split == "test" and not any(p.T_gt is not None for p in pairs):
        raise LowlabelError(f"{data}: no pair has poses (cloud_bin_<i>.info.txt); evaluation needs them")
    return pairs


def _orient(cfg: Config, data: Path | None) -> str:
    if cfg.orient == "auto":
        return "centroid" if data is None else "origin"
    if cfg.orient not in ("origin", "centroid"):
        raise LowlabelError(f"orient='{cfg.orient}': use auto, origin or centroid")
    return cfg.orient


# --------------------------------------------------------------------------------------------------- student I/O


def _voxelise(points: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """One point per occupied voxel: (selected points (M, 3), their voxel indices (M, 3) int64)."""
    keep = teacher.voxel_select(points, voxel)
    sel = points[keep]
    return sel, np.floor(sel / voxel).astype(np.int64)


@torch.no_grad()
def describe(model: torch.nn.Module, clouds: Sequence[np.ndarray], voxel: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(selected points (M, 3), descriptors (M, D) float32) per cloud: voxelise, one forward pass per cloud (eval
    mode), as FCGF feature extraction."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for cloud in clouds:
        pts, vox = _voxelise(np.asarray(cloud, dtype=np.float64), voxel)
        coords = torch.from_numpy(np.pad(vox, ((0, 0), (1, 0)))).to(device)
        feats = model(coords, torch.ones(len(coords), 1, device=device))
        out.append((pts, feats.float().cpu().numpy()))
    model.train(was)
    return out


def positive_pairs(src: np.ndarray, dst: np.ndarray, T: np.ndarray, radius: float) -> np.ndarray:
    """(P, 2) int64 rows (i, j): dst[j] within `radius` of src[i] moved by T (FCGF `get_matching_indices`)."""
    hits = cKDTree(dst).query_ball_point(geometry.apply_transform(src, T), radius, workers=-1)
    counts = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(hits))
    if counts.sum() == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return np.stack([np.repeat(np.arange(len(src)), counts), np.concatenate(hits).astype(np.int64)], 1)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation about a uniform axis by an angle uniform in [0, max_deg] (FCGF's `M(axis, angle)` augmentation)."""
    axis = rng.standard_normal(3)
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(rng.uniform(0, max_deg))).as_matrix()


def make_batch(items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], cfg: Config,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """One student batch from (source, target, T) triples: each cloud rotated independently about its centroid
    (T updated), voxelised; rows (b, i, j, k) with the sources first (b < B) then the targets. Returns coords (N, 4),
    all-ones feats (N, 1), the number of source rows, positives (P, 2) into (sources, targets)."""
    v = cfg.voxel_size
    src_vox, dst_vox, positives, n0, n1 = [], [], [], 0, 0
    for src, dst, T in items:
        Ra, Rb = _rotation(rng, cfg.augment_angle), _rotation(rng, cfg.augment_angle)
        ca, cb = src.mean(0), dst.mean(0)
        A = geometry.make_transform(Ra, ca - Ra @ ca)
        B = geometry.make_transform(Rb, cb - Rb @ cb)
        ps, vs = _voxelise(geometry.apply_transform(src, A), v)
        pd, vd = _voxelise(geometry.apply_transform(dst, B), v)
        pos = positive_pairs(ps, pd, B @ T @ np.linalg.inv(A), cfg.positive_radius * v)
        positives.append(pos + np.array([n0, n1]))
        src_vox.append(vs)
        dst_vox.append(vd)
        n0, n1 = n0 + len(vs), n1 + len(vd)
    pos = np.concatenate(positives)
    if len(pos) == 0:
        raise LowlabelError("a training batch has no positive pair: the labels' transforms do not overlap the "
                            "clouds (check the voxel size and the label files)")
    clouds = src_vox + dst_vox
    coords = np.concatenate([np.pad(c, ((0, 0), (1, 0)), constant_values=b) for b, c in enumerate(clouds)])
    return (torch.from_numpy(coords), torch.ones(len(coords), 1), n0, torch.from_numpy(pos))


class PairBatches:
    """Batches of `cfg.batch_pairs` labelled pairs (source, target, T), reshuffled per epoch by (seed, epoch), with
    augmentation drawn from (seed, epoch, batch, rank): a resumed run sees the very batches of an uninterrupted one.
    Sharded by rank (every rank takes every world_size-th pair of the epoch's order)."""

    def __init__(self, items: list[tuple[np.ndarray, np.ndarray, np.ndarray]], cfg: Config, *, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if not items:
            raise LowlabelError("no verified pseudo-label to learn from: the teacher's confidences are all below "
                                f"{cfg.min_confidence}; add pairs or lower min_confidence")
        self.items, self.cfg, self.seed, self.rank, self.world_size = items, cfg, seed, rank, world_size
        self.batch = min(cfg.batch_pairs, max(1, len(items) // world_size))
        self.steps_per_epoch = (len(items) // world_size) // self.batch

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.items))[self.rank::self.world_size]
        for b in range(start, self.steps_per_epoch):
            rng = np.random.default_rng([self.seed, epoch, b, self.rank])
            yield make_batch([self.items[k] for k in order[b * self.batch:(b + 1) * self.batch]], self.cfg, rng)


def make_step_fn(cfg: Config) -> Any:
    """step_fn(model, (coords, feats, n_src, positives), step) -> {"positive", "negative"} of the hardest-contrastive
    loss (their sum is FCGF's loss)."""

    def step_fn(model: torch.nn.Module, batch: tuple, step: int) -> dict[str, torch.Tensor]:
        coords, feats, n_src, positives = batch
        out = model(coords, feats)
        loss = hardest_contrastive_loss(out[:n_src], out[n_src:], positives, num_pos=cfg.num_pos,
                                        num_hn_samples=cfg.num_hn_samples, pos_margin=cfg.pos_margin,
                                        neg_margin=cfg.neg_margin)
        return {"positive": loss["positive"], "negative": loss["negative"]}

    return step_fn


# --------------------------------------------------------------------------------------------- teacher, verifier


def teach(pairs: Sequence[Pair], model: torch.nn.Module | None, cfg: Config, orient: str,
          seed: int = 0) -> list[teacher.Registration]:
    """One teaching pass: FPFH + mutual matching (model None, the bootstrap) or the student's descriptors + plain
    nearest neighbours, then RANSAC + ICP at 1.4 voxel; RANSAC draws from default_rng([seed, pair index])."""
    out = []
    for k, p in enumerate(pairs):
        rng = np.random.default_rng([seed, k])
        if model is None:
            out.append(teacher.register_fpfh(p.source, p.target, cfg.voxel_size, orient=orient, rng=rng,
                                             max_iter=cfg.ransac_iter))
        else:
            (ps, fs), (pd, fd) = describe(model, [p.source, p.target], cfg.voxel_size)
            out.append(teacher.register(ps, pd, fs, fd, mutual=False, distance=1.4 * cfg.voxel_size,
                                        max_iter=cfg.ransac_iter, rng=rng))
    return out


def pair_errors(T: np.ndarray, pair: Pair) -> tuple[float, float]:
    """(rotation error in degrees, translation error) of T against the pair's ground truth."""
    if pair.T_gt is None:
        raise LowlabelError(f"pair {pair.scene} {pair.i}-{pair.j} has no ground-truth pose")
    return (float(geometry.rotation_error(T[:3, :3], pair.T_gt[:3, :3])),
            float(geometry.translation_error(T[:3, 3], pair.T_gt[:3, 3])))


def registration_rows(pairs: Sequence[Pair], regs: Sequence[teacher.Registration]) -> list[dict[str, Any]]:
    """Per pair with poses: scene, i, j, rotation/translation error, success (< 15 degrees and < 0.3), confidence."""
    rows = []
    for p, r in zip(pairs, regs, strict=True):
        if p.T_gt is None:
            continue
        re, te = pair_errors(r.T, p)
        rows.append({"scene": p.scene, "i": p.i, "j": p.j, "rotation_error": re, "translation_error": te,
                     "success": bool(re < 15.0 and te < 0.3), "confidence": r.confidence})
    return rows


def recall(rows: Sequence[dict[str, Any]]) -> float:
    """Registration recall (share of successful rows)."""
    return float(np.mean([r["success"] for r in rows])) if rows else float("nan")


# ---------------------------------------------------------------------------------------------------- the loop


def rounds_of(cfg: Config) -> list[int]:
    """Teaching rounds: [-1] (bs) then 0 .. meta_iters - 1; the oracle has one round."""
    return [-1] if cfg.supervised else [-1, *range(cfg.meta_iters)]


class RegistrationTask:
    """The 3D side of `loop.run_rounds`: fragment pairs, FPFH / student teaching passes (or the true transforms for
    the oracle), 3D label files, confidence verifier, FCGF batches and test registration recall."""

    def __init__(self, cfg: Config, pairs: Sequence[Pair], test: Sequence[Pair], orient: str) -> None:
        self.cfg, self.pairs, self.test_pairs, self.orient = cfg, list(pairs), list(test), orient
        self.step_fn = make_step_fn(cfg)

    def teach(self, model: torch.nn.Module | None, meta: int) -> list[Label3D]:
        if self.cfg.supervised:
            if any(p.T_gt is None for p in self.pairs):
                raise LowlabelError("supervised=true needs poses for every training pair")
            return [Label3D(p.i, p.j, 1.0, p.T_gt) for p in self.pairs]
        regs = teach(self.pairs, model, self.cfg, self.orient, seed=self.cfg.train.seed + 1000 * (meta + 1))
        return [Label3D(p.i, p.j, r.confidence, r.T) for p, r in zip(self.pairs, regs, strict=True)]

    def read_labels(self, root: Path, meta: int) -> list[Label3D] | None:
        by_key = {}
        for scene in dict.fromkeys(p.scene for p in self.pairs):
            path = label_path(root, meta, scene)
            if not path.is_file():
                return None
            by_key.update({(scene, lab.i, lab.j): lab for lab in read_labels_3d(path)})
        missing = [p for p in self.pairs if (p.scene, p.i, p.j) not in by_key]
        if missing:
            raise LowlabelError(f"{label_path(root, meta, missing[0].scene)}: no label for pair {missing[0].i} "
                                f"{missing[0].j}; delete the round's label folder to teach it again")
        return [by_key[(p.scene, p.i, p.j)] for p in self.pairs]

    def write_labels(self, root: Path, meta: int, labels: Sequence[Label3D]) -> None:
        for scene in dict.fromkeys(p.scene for p in self.pairs):
            write_labels_3d(label_path(root, meta, scene),
                            [lab for p, lab in zip(self.pairs, labels, strict=True) if p.scene == scene])

    def verified(self, label: Label3D) -> bool:
        return label.confidence >= self.cfg.min_confidence

    def label_correct(self, index: int, label: Label3D) -> bool | None:
        pair = self.pairs[index]
        if pair.T_gt is None:
            return None
        re, te = pair_errors(label.T, pair)
        return bool(re < 15 and te < 0.3)

    def teacher_name(self, meta: int) -> str:
        return "ground truth" if self.cfg.supervised else ("FPFH" if meta == -1 else f"student {round_name(meta - 1)}")

    def build_model(self) -> torch.nn.Module:
        return build_model(self.cfg)

    def batches(self, kept: Sequence[tuple[int, Label3D]], meta: int, runtime: Runtime) -> PairBatches:
        items = [(self.pairs[k].source, self.pairs[k].target, lab.T) for k, lab in kept]
        return PairBatches(items, self.cfg, seed=self.cfg.train.seed + 7 * (meta + 1), rank=runtime.rank,
                           world_size=runtime.world_size)

    def test(self, model: torch.nn.Module) -> dict[str, Any]:
        rows = registration_rows(self.test_pairs, teach(self.test_pairs, model, self.cfg, self.orient, seed=10**6))
        return {"test_recall": recall(rows), "test_rows": rows}


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """The SGP loop (or the oracle when cfg.supervised): per round, teach (or read the round's label files when
    resuming), verify, train the student through the Trainer, and evaluate test recall and pseudo-label precision;
    run_dir/summary.json gets the per-round table. A later round with no verified label keeps the previous round's
    student (0 steps); a bootstrap with none is an error."""
    return train_model(cfg, data=data, run_dir=run_dir, runtime=runtime, resume=resume)[1]


def train_model(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime,
                resume: bool, test_pairs: Sequence[Pair] | None = None) -> tuple[torch.nn.Module, dict]:
    """`train`, returning the last round's student with the summary (test_pairs: evaluation pairs already loaded)."""
    orient = _orient(cfg, data)
    test = list(test_pairs) if test_pairs is not None else load_pairs(cfg, data, "test")
    task = RegistrationTask(cfg, load_pairs(cfg, data, "train"), test, orient)
    model, rounds = loop.run_rounds(task, rounds_of(cfg), finetune=cfg.finetune, seed=cfg.train.seed,
                                    train=cfg.train, optim=cfg.optim, run_dir=Path(run_dir), runtime=runtime,
                                    resume=resume)
    summary = {"rounds": rounds, "final_test_recall": rounds[-1]["test_recall"], "orient": orient}
    if runtime.is_main:
        write_json(Path(run_dir) / "summary.json", summary)
    return model, summary


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """Registration recall (15 degrees, 0.3) and median errors of a student checkpoint on the test pairs."""
    model = load_model(build_model, cfg, checkpoint, runtime.device)
    pairs = load_pairs(cfg, data, "test")
    rows = registration_rows(pairs, teach(pairs, model, cfg, _orient(cfg, data), seed=10**6))
    return {"recall": recall(rows), "rotation_error_median": float(np.median([r["rotation_error"] for r in rows])),
            "translation_error_median": float(np.median([r["translation_error"] for r in rows])),
            "pairs": float(len(rows))}


def smoke_case(runtime: Runtime) -> SmokeCase:
    """A 4-8-16-32 FCGF on one batch of two geometry-world pairs under their true transforms."""
    cfg = Config(batch_pairs=2, num_pos=256, num_hn_samples=128,
                 student=StudentConfig(channels=[4, 8, 16, 32], tr_channels=[8, 8, 8, 16], out_channels=8),
                 world=WorldConfig(n_train=2, n_test=1, n_points=1024))
    items = [(p.source, p.target, p.T_gt) for p in world_pairs(cfg.world, "train")]
    batch = make_batch(items, cfg, np.random.default_rng(0))
    return SmokeCase(model=build_model(cfg).to(runtime.device), step_fn=make_step_fn(cfg), batch=batch)


def with_steps(cfg: Config, steps: int) -> Config:
    """`cfg` with rounds of `steps` optimiser steps each."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=steps))
