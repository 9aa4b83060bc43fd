"""DTC recipe: official LA defaults, training through the engine, evaluation, a smoke case.

Total loss (spec "Losses" 5): L = L_Dice + beta L_LSF + lambda(t) L_DTC, with L_Dice and L_LSF on the labelled part
of each 2+2 batch and L_DTC on all of it; lambda(t) = consistency * exp(-5 (1 - c/40)^2), c = min(t // 150, 40).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowlabel.data.synth.volumes import VolumeConfig, generate_volume
from lowlabel.engine import schedules
from lowlabel.engine.demo import SmokeCase
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.engine.trainer import Trainer
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json
from lowlabel.methods.dtc import losses
from lowlabel.methods.dtc.data import Case, TwoStreamBatches, read_la_case, read_list, rescale, scaled_patch
from lowlabel.methods.dtc.inference import segment_volume
from lowlabel.methods.dtc.model import dtc_vnet
from lowlabel.metrics.segmentation import case_metrics
from lowlabel.nn.fast import prefer_channels_last

OFFICIAL_STEPS = 6000


@dataclass
class SyntheticConfig:
    """The volumes world used when no --data is given: n_train volumes (the first `labelled` of them labelled)."""

    n_train: int = 40
    n_test: int = 10
    shape: list[int] = field(default_factory=lambda: [48, 48, 32])
    seed: int = 0


@dataclass
class Config:
    """Official LA defaults of `train_la_dtc.py` (spec "Losses" and "Training procedure")."""

    labelled: int = 16  # the first `labelled` ids of train.list are labelled; the rest are unlabelled
    n_filters: int = 16
    dropout: bool = True
    patch: list[int] = field(default_factory=lambda: [112, 112, 80])  # at scale 1
    stride: list[int] = field(default_factory=lambda: [18, 18, 4])  # at scale 1
    scale: float = 1.0  # CPU budget option: volumes resampled by `scale`, patch and stride scaled with them
    labelled_bs: int = 2
    unlabelled_bs: int = 2
    beta: float = 0.3  # weight of L_LSF (0 drops the level-set regression)
    consistency: float = 1.0  # maximum weight of L_DTC (0 = supervised baseline)
    consistency_rampup: int = 40  # ramp length in ramp units
    ramp_every: int = 150  # steps per ramp unit in a 6,000-step run; scaled with the run's length
    k: float = 1500.0
    threshold: float = 0.5
    keep_largest: bool = True
    infer_batch: int = 2  # windows per forward pass; 2 was fastest on a 2-core CPU (benchmarks/dtc.py)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=OFFICIAL_STEPS, log_every=20, checkpoint_every=1000, seed=1337))
    # SGD 0.01, momentum 0.9, wd 1e-4, lr x0.1 at iterations 2,500 and 5,000 of 6,000 (fractions of the run)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="step",
        milestones=[2500 / OFFICIAL_STEPS, 5000 / OFFICIAL_STEPS], gamma=0.1))


def with_steps(cfg: Config, steps: int) -> Config:
    """`cfg` with a run of `steps` iterations (the schedules keep their official shape: see `ramp_unit`)."""
    if steps < 1:
        raise LowlabelError(f"iterations={steps}: need at least 1")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=steps))


def ramp_unit(cfg: Config, total_steps: int) -> int:
    """Steps per ramp unit for a `total_steps` run: the official 150 of 6,000 scaled by total_steps / 6000, so the
    consistency weight reaches its maximum at the end of any run length, as it does in the official one."""
    return max(1, round(cfg.ramp_every * total_steps / OFFICIAL_STEPS))


def consistency_ramp(step: int, weight: float = 1.0, rampup: int = 40, every: int = 150) -> float:
    """lambda(t) = weight * exp(-5 (1 - c/rampup)^2), c = clip(step // every, 0, rampup) (spec "Losses" 5);
    official defaults: lambda(0) = 0.00674, lambda(6000) = 1."""
    return weight * schedules.sigmoid_rampup(step // every, rampup)


def effective_patch(cfg: Config) -> list[int]:
    """Training/inference patch at cfg.scale (multiple of 16)."""
    return scaled_patch(cfg.patch, cfg.scale)


def effective_stride(cfg: Config) -> list[int]:
    """Sliding-window stride at cfg.scale (at least 1)."""
    return [max(1, round(s * cfg.scale)) for s in cfg.stride]


def build_model(cfg: Config) -> torch.nn.Module:
    """The DTC V-Net of `cfg` (one input channel, one class), its initial weights drawn from `cfg.train.seed`
    whatever ran before in the process (so the demo's models of one seed start from the same weights)."""
    with seeded(cfg.train.seed):
        return dtc_vnet(n_filters=cfg.n_filters, dropout=cfg.dropout)


def synthetic_cases(cfg: Config, split: str) -> list[Case]:
    """Volumes-world cases: split 'train' (n_train volumes) or 'test' (n_test, disjoint seeds)."""
    s = cfg.synthetic
    world = VolumeConfig(shape=tuple(s.shape))
    ids = range(s.n_train) if split == "train" else range(s.n_train, s.n_train + s.n_test)
    return [Case(f"synth{i:03d}", *generate_volume(np.random.default_rng([s.seed, i]), world)) for i in ids]


def load_split(cfg: Config, data: Path | None, split: str, scale: float) -> list[Case]:
    """Cases of `split` from the LA layout at `data` (resampled by `scale`), or from the volumes world. Every test
    case and the first cfg.labelled train cases must carry a label; the other train cases' labels are not read."""
    if data is None:
        cases = synthetic_cases(cfg, split)
        check_labelled(cfg, len(cases), split)
        return [Case(c.name, *rescale(c.image, c.label, scale)) for c in cases] if scale != 1.0 else cases
    names = read_list(data, split)
    check_labelled(cfg, len(names), split)
    n_labelled = cfg.labelled if split == "train" else len(names)
    return [read_la_case(data, name, scale, labelled=i < n_labelled) for i, name in enumerate(names)]


def check_labelled(cfg: Config, n_cases: int, split: str) -> None:
    """cfg.labelled must leave the train split at least one labelled case and fit in it."""
    if split == "train" and not 0 < cfg.labelled <= n_cases:
        raise LowlabelError(f"labelled={cfg.labelled}: need 1..{n_cases} (the train split has {n_cases} cases)")


def make_step_fn(cfg: Config, total_steps: int) -> Any:
    """step_fn(model, (image (B,1,*P), label (B,*P)), step) -> named losses; the first labelled_bs are labelled."""
    nl = cfg.labelled_bs
    every = ramp_unit(cfg, total_steps)

    def step_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> dict:
        image, label = batch
        level_set, logits = model(image)
        y = label[:nl]
        out = {"dice": losses.dice_loss(torch.sigmoid(logits[:nl, 0]), y)}
        if cfg.beta > 0:
            target = losses.signed_distance_map(y)
            out["lsf"] = cfg.beta * losses.level_set_loss(level_set[:nl, 0], target)
        if cfg.consistency > 0:
            ramp = consistency_ramp(step, cfg.consistency, cfg.consistency_rampup, every)
            out["dtc"] = ramp * losses.dual_task_consistency(level_set, logits, cfg.k)
        return out

    return step_fn


def evaluate_cases(model: torch.nn.Module, cfg: Config, cases: list[Case]) -> list[dict[str, Any]]:
    """Per-case Dice/Jaccard/95HD/ASD (voxels of the cases' own grid) of sliding-window predictions."""
    rows = []
    for case in cases:
        if case.label is None:
            raise LowlabelError(f"case {case.name} has no label; evaluation needs labelled test cases")
        mask, _ = segment_volume(model, case.image, patch=effective_patch(cfg), stride=effective_stride(cfg),
                                 scale=cfg.scale, threshold=cfg.threshold, keep_largest=cfg.keep_largest,
                                 batch_size=cfg.infer_batch)
        rows.append({"case": case.name, **case_metrics(mask, case.label)})
    return rows


def mean_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Plain mean of every metric over the cases of one model (as the official evaluation)."""
    return {k: float(np.mean([r[k] for r in rows])) for k in ("dice", "jaccard", "hd95", "asd")}


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """Train DTC (or the supervised baseline when consistency = 0 and unlabelled_bs = 0), then evaluate the final
    model on the test split; summary.json gets the per-case and mean metrics."""
    return train_model(cfg, data=data, run_dir=run_dir, runtime=runtime, resume=resume)[1]


def train_model(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime,
                resume: bool) -> tuple[torch.nn.Module, dict]:
    """`train`, returning the trained model (last iteration, as the authors report) with the summary."""
    cases = load_split(cfg, data, "train", cfg.scale)
    test_cases = load_split(cfg, data, "test", 1.0)  # read and checked now: a bad test case must not wait for the end
    labelled, unlabelled = cases[: cfg.labelled], cases[cfg.labelled :]
    batches = TwoStreamBatches(labelled, unlabelled if cfg.unlabelled_bs else [], effective_patch(cfg),
                               labelled_bs=cfg.labelled_bs, unlabelled_bs=cfg.unlabelled_bs, seed=cfg.train.seed)
    model = prefer_channels_last(build_model(cfg), runtime.device)
    total = cfg.train.total_steps(batches.steps_per_epoch)
    trainer = Trainer(model, make_step_fn(cfg, total), config=cfg.train, optim=cfg.optim, runtime=runtime,
                      run_dir=run_dir)
    summary = trainer.fit(batches, resume=resume)
    rows = evaluate_cases(model, cfg, test_cases)
    summary.update({"patch": effective_patch(cfg), "stride": effective_stride(cfg), "scale": cfg.scale,
                    "n_labelled": len(labelled), "n_unlabelled": len(unlabelled) if cfg.unlabelled_bs else 0,
                    "test": mean_metrics(rows), "test_cases": rows})
    if runtime.is_main:
        write_json(run_dir / "summary.json", summary)
    return model, summary


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """Mean Dice/Jaccard/95HD/ASD of a checkpoint on the test split (per-case rows: `evaluate_cases`)."""
    model = load_model(build_model, cfg, checkpoint, runtime.device)
    return mean_metrics(evaluate_cases(model, cfg, load_split(cfg, data, "test", 1.0)))


def smoke_case(runtime: Runtime) -> SmokeCase:
    """A 4-filter V-Net on a 2+2 batch of 16^3 patches from the volumes world (all three loss terms active)."""
    cfg = Config(n_filters=4, patch=[16, 16, 16], synthetic=SyntheticConfig(n_train=4, n_test=1, shape=[24, 24, 20]))
    cases = synthetic_cases(cfg, "train")
    batches = TwoStreamBatches(cases[:2], cases[2:], cfg.patch, seed=0)
    batch = next(iter(batches.epoch(0)))
    step_fn = make_step_fn(dataclasses.replace(cfg, ramp_every=1, consistency_rampup=1), OFFICIAL_STEPS)
    return SmokeCase(model=build_model(cfg).to(runtime.device), step_fn=step_fn, batch=batch)
