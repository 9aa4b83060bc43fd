"""Recipe pieces: the contract, official defaults, lambda warm-up, lr scaling and run length through the
trainer, the smoke case, evaluation on a folder."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine import runtime as rt
from lowlabel.engine.config import load_config
from lowlabel.engine.recipe import OptimConfig, TrainConfig, contract_problems
from lowlabel.methods.densecl.recipe import (
    AugConfig,
    Config,
    ModelConfig,
    build_model,
    evaluate,
    lambda_at,
    lr_scale,
    smoke_case,
    train,
)


def test_lambda_warmup_schedule() -> None:
    assert [lambda_at(s, 0.5, 3) for s in range(5)] == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert lambda_at(0, 0.5, 0) == 0.5


def test_the_folder_satisfies_the_recipe_contract() -> None:
    assert contract_problems("densecl") == []


def test_defaults_are_the_official_imagenet_config_field_by_field() -> None:
    # spec "Training procedure" / the official densecl_r50_8xb32-200e ImageNet config
    cfg = Config()
    assert cfg.model == ModelConfig(arch="resnet50", small_stem=False, width=64, hid_dim=2048, out_dim=128,
                                    num_grid=None)
    assert cfg.aug == AugConfig(image_size=224, load_size=256, crop_scale=[0.2, 1.0], jitter=[0.4, 0.4, 0.4, 0.1],
                                jitter_p=0.8, grayscale_p=0.2, blur_sigma=[0.1, 2.0], blur_p=0.5, flip_p=0.5)
    assert (cfg.queue_size, cfg.temperature, cfg.loss_lambda, cfg.lambda_warmup_steps) == (65536, 0.2, 0.5, 0)
    assert (cfg.momentum, cfg.batch_size) == (0.999, 32)  # key-encoder EMA; 32 per GPU x 8 GPUs = 256
    assert cfg.optim == OptimConfig(name="sgd", lr=0.03, momentum=0.9, nesterov=False, weight_decay=1e-4,
                                    schedule="cosine", warmup_steps=0)
    assert (cfg.train.epochs, cfg.train.max_steps) == (200, 0)
    assert not any(hasattr(cfg, loose) for loose in ("lr", "weight_decay", "sgd_momentum", "epochs"))


def test_config_is_overridable_by_dotted_keys() -> None:
    cfg = load_config(Config, overrides=["loss_lambda=0.0", "model.arch=resnet18", "optim.lr=0.3",
                                         "train.epochs=800"])
    assert (cfg.loss_lambda, cfg.model.arch, cfg.optim.lr, cfg.train.epochs) == (0.0, "resnet18", 0.3, 800)
    assert build_model(Config(queue_size=16)).encoder_q.backbone.feature_dim == 2048


@dataclass
class _World:
    world_size: int


def test_lr_is_scaled_by_the_global_batch_over_256() -> None:
    assert lr_scale(Config(), _World(8)) == 1.0  # the official 8 x 32
    assert lr_scale(Config(batch_size=64), _World(1)) == 0.25


def test_training_length_comes_from_train_epochs_and_the_lr_from_optim(tmp_path: Path) -> None:
    cfg = Config(model=ModelConfig(arch="resnet18", small_stem=True, width=8, hid_dim=16, out_dim=8),
                 aug=AugConfig(image_size=16, load_size=20, blur_sigma=[0.1, 0.5]), queue_size=8, batch_size=4,
                 synthetic_images=8, num_workers=0,
                 train=TrainConfig(epochs=1, log_every=1, checkpoint_every=100))
    summary = train(cfg, data=None, run_dir=tmp_path, runtime=rt.init("cpu", seed=0), resume=False)
    assert summary["steps"] == 2  # 1 epoch of 8 images in batches of 4
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    base = 0.03 * 4 / 256  # optim.lr x lr_scale
    assert [r["lr"] for r in rows] == pytest.approx([base * 0.5 * (1 + math.cos(math.pi / 2)), 0.0])


def test_smoke_case_step_gives_finite_losses_and_grads_only_on_query() -> None:
    runtime = rt.init("cpu", seed=0)
    case = smoke_case(runtime)
    losses, _ = case.step_fn(case.model, case.batch, 0)
    assert set(losses) == {"loss_contra_single", "loss_contra_dense"}
    sum(losses.values()).backward()
    for name, p in case.model.named_parameters():
        frozen = name.startswith(case.frozen_prefixes)
        assert (p.grad is None) == frozen, name


def test_evaluate_on_a_folder_reports_mean_losses(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    case_cfg = Config(queue_size=8, batch_size=2, num_workers=0)
    case_cfg.model.arch, case_cfg.model.small_stem, case_cfg.model.width = "resnet18", True, 8
    case_cfg.model.hid_dim, case_cfg.model.out_dim = 16, 8
    case_cfg.aug.image_size, case_cfg.aug.load_size, case_cfg.aug.blur_sigma = 16, 20, [0.1, 0.5]
    path = ckpt.atomic_save({"model": build_model(case_cfg).state_dict()}, tmp_path / "ck" / "step_00000001.pt")
    out = evaluate(case_cfg, checkpoint=path, data=tmp_path, runtime=rt.init("cpu", seed=0))
    assert set(out) == {"loss_contra_single", "loss_contra_dense"}
    assert all(np.isfinite(v) and v > 0 for v in out.values())
    assert torch.isfinite(torch.tensor(list(out.values()))).all()
