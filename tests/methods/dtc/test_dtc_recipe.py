"""DTC recipe and CLI: a short run on the volumes world lowers the loss; segment writes masks; eval prints metrics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lowlabel.data.io import read_h5_volume, read_nifti, write_nifti
from lowlabel.data.synth.volumes import VolumeConfig, write_la_layout
from lowlabel.engine import runtime as rt
from lowlabel.engine.config import save_config
from lowlabel.methods.dtc import demo, recipe
from lowlabel.methods.dtc.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(steps: int) -> recipe.Config:
    cfg = recipe.Config(labelled=2, n_filters=2, patch=[16, 16, 16], stride=[8, 8, 8],
                        synthetic=recipe.SyntheticConfig(n_train=6, n_test=2, shape=[24, 24, 20]))
    cfg = recipe.with_steps(cfg, steps)
    # constant lr: squeezed into 24 steps, the official decay at 5/12 and 5/6 of the run would freeze the last half
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=0.05, schedule="constant"),
                               train=dataclasses.replace(cfg.train, log_every=1, seed=0))


def test_consistency_ramp_official_values() -> None:
    assert recipe.consistency_ramp(0) == pytest.approx(0.006737947)
    assert recipe.consistency_ramp(149) == recipe.consistency_ramp(0)
    assert recipe.consistency_ramp(6000) == pytest.approx(1.0)
    assert recipe.consistency_ramp(3000) == pytest.approx(np.exp(-5 * 0.5**2))


def test_official_defaults() -> None:
    cfg = recipe.Config()
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.gamma) == ("sgd", 0.01, 0.9, 1e-4, 0.1)
    assert cfg.train.max_steps == 6000 and cfg.train.seed == 1337 and (cfg.labelled_bs, cfg.unlabelled_bs) == (2, 2)
    assert (cfg.beta, cfg.consistency, cfg.consistency_rampup, cfg.ramp_every, cfg.k) == (0.3, 1.0, 40, 150, 1500.0)
    assert cfg.patch == [112, 112, 80] and cfg.stride == [18, 18, 4] and cfg.n_filters == 16


def test_schedules_keep_their_shape_at_any_length() -> None:
    from lowlabel.engine.recipe import lr_factor

    for steps, milestones, unit in ((6000, (2500, 5000), 150), (600, (250, 500), 15), (150, (62, 125), 4)):
        cfg = recipe.with_steps(recipe.Config(), steps)
        factors = [lr_factor(s, steps, cfg.optim) for s in (milestones[0] - 1, milestones[0], milestones[1])]
        assert factors == pytest.approx([1.0, 0.1, 0.01]) and recipe.ramp_unit(cfg, steps) == unit


def test_short_training_lowers_the_loss(tmp_path: Path) -> None:
    cfg = _tiny(24)
    summary = recipe.train(cfg, data=None, run_dir=tmp_path, runtime=rt.init("cpu", seed=0), resume=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    dice = [r["dice"] for r in rows if "dice" in r]
    assert len(dice) == 24 and {"dice", "lsf", "dtc"} <= set(rows[-1])
    assert np.mean(dice[-6:]) < np.mean(dice[:6]) - 0.02
    assert set(summary["test"]) == {"dice", "jaccard", "hd95", "asd"} and len(summary["test_cases"]) == 2
    save_config(cfg, tmp_path / "config.yaml")  # as `lowlabel dtc train` does
    (overlay,) = demo.figures(tmp_path)  # the report's figure, drawn on demand from the newest checkpoint
    assert overlay.name == "overlay.png" and overlay.read_bytes()[:4] == b"\x89PNG"
    assert demo.figures(tmp_path) == [overlay]


def test_cli_train_segment_eval(tmp_path: Path) -> None:
    root = write_la_layout(tmp_path / "la", n_train=4, n_test=1, seed=1, cfg=VolumeConfig(shape=(24, 24, 20)))
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--data", str(root), "--labelled", "2", "--iterations", "2",
                                 "--n-filters", "2", "--set", "patch=[16,16,16]", "--set", "stride=[8,8,8]",
                                 "--out", str(tmp_path / "runs"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    ckpts = sorted((tmp_path / "runs").glob("dtc/*/checkpoints/*.pt"))
    assert ckpts, result.output
    name = (root / "test.list").read_text().split()[0]
    volume = root / name / "mri_norm2.h5"
    write_nifti(tmp_path / "vol.nii.gz", read_h5_volume(volume)["image"], (0.625, 0.625, 0.625))
    result = runner.invoke(app, ["segment", str(ckpts[-1]), str(volume), str(tmp_path / "vol.nii.gz"),
                                 "--out", str(tmp_path / "masks"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    mask, spacing = read_nifti(tmp_path / "masks" / "vol_mask.nii.gz")
    assert mask.shape == (24, 24, 20) and spacing == (0.625, 0.625, 0.625) and set(np.unique(mask)) <= {0, 1}
    h5_mask, _ = read_nifti(tmp_path / "masks" / f"{name}_mask.nii.gz")
    np.testing.assert_array_equal(h5_mask, mask)
    result = runner.invoke(app, ["eval", str(ckpts[-1]), "--data", str(root), "--overlay", name,
                                 "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "mean" in result.output and (tmp_path / f"{name}_overlay.png").stat().st_size > 0


def test_load_model_rejects_other_width(tmp_path: Path) -> None:
    from lowlabel.engine.recipe import load_model

    cfg = _tiny(1)
    torch.save({"model": recipe.build_model(cfg).state_dict()}, tmp_path / "w.pt")
    save_config(cfg, tmp_path / "config.yaml")
    with pytest.raises(ValueError, match="does not fit this model/config"):
        load_model(recipe.build_model, dataclasses.replace(cfg, n_filters=3), tmp_path / "w.pt", "cpu")


def test_initial_weights_come_from_train_seed_whatever_ran_before() -> None:
    """The demo trains DTC and its baseline one after the other in one process: both must start from the same
    weights (a paired seed), not from wherever the first run left the global stream."""
    cfg = _tiny(1)
    torch.manual_seed(1)
    first = recipe.build_model(cfg).state_dict()
    torch.rand(1000)  # what a first training run would draw
    second = recipe.build_model(cfg).state_dict()
    other = recipe.build_model(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=1))).state_dict()
    weights = [k for k, v in first.items() if v.is_floating_point() and v.numel() > 1]
    assert weights and all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in weights)


def test_smoke_case_one_step() -> None:
    case = recipe.smoke_case(rt.init("cpu", seed=0))
    out = case.step_fn(case.model, case.batch, 0)
    total = sum(out.values())
    total.backward()
    assert all(torch.isfinite(v) for v in out.values())
    assert all(p.grad is not None for p in case.model.parameters())


def test_scale_resamples_synthetic_cases_and_patch() -> None:
    cfg = dataclasses.replace(_tiny(1), scale=0.5, patch=[40, 40, 40], stride=[9, 9, 4])
    cases = recipe.load_split(cfg, None, "train", cfg.scale)
    assert cases[0].image.shape == cases[0].label.shape == (12, 12, 10)
    assert recipe.effective_patch(cfg) == [16, 16, 16] and recipe.effective_stride(cfg) == [4, 4, 2]
