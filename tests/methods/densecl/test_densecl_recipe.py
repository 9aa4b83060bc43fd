"""Recipe pieces: lambda warm-up, the smoke case, config defaults, evaluation on a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine import runtime as rt
from lowlabel.engine.config import load_config
from lowlabel.methods.densecl.recipe import Config, build_model, evaluate, lambda_at, smoke_case


def test_lambda_warmup_schedule() -> None:
    assert [lambda_at(s, 0.5, 3) for s in range(5)] == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert lambda_at(0, 0.5, 0) == 0.5


def test_defaults_are_the_official_ones_and_overridable() -> None:
    cfg = load_config(Config, overrides=["loss_lambda=0.0", "model.arch=resnet18"])
    assert (cfg.queue_size, cfg.temperature, cfg.momentum, cfg.lr, cfg.weight_decay) == (65536, 0.2, 0.999, 0.03,
                                                                                           1e-4)
    assert Config().loss_lambda == 0.5 and cfg.loss_lambda == 0.0
    assert build_model(Config(queue_size=16)).encoder_q.backbone.feature_dim == 2048


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
