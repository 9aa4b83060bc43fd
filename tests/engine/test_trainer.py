from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lowlabel.engine.batches import DatasetBatches, TensorBatches
from lowlabel.engine.trainer import TrainConfig, Trainer
from lowlabel.errors import LowlabelError

X = torch.randn(96, 5, generator=torch.Generator().manual_seed(1))
Y = X @ torch.randn(5, 1, generator=torch.Generator().manual_seed(2))


def mse_step(model, batch, step):
    x, y = batch
    return {"mse": ((model(x) - y) ** 2).mean(), "l1": (model(x) - y).abs().mean()}


def make_trainer(run_dir, runtime, steps, step_fn=mse_step, **cfg):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    config = TrainConfig(max_steps=steps, log_every=4, checkpoint_every=5, **cfg)
    return Trainer(model, opt, step_fn, config=config, runtime=runtime, run_dir=run_dir, scheduler=sched,
                   loss_weights={"l1": 0.5})


def test_killed_and_resumed_run_is_bit_identical(tmp_path, cpu_runtime):
    full = make_trainer(tmp_path / "full", cpu_runtime, 23)
    full.fit(TensorBatches([X, Y], 16, cpu_runtime, seed=3))
    part = make_trainer(tmp_path / "part", cpu_runtime, 23)
    part.config.max_steps = 12  # "killed" after step 12 (last checkpoint at 12: the end of that run)
    part.fit(TensorBatches([X, Y], 16, cpu_runtime, seed=3))
    resumed = make_trainer(tmp_path / "part", cpu_runtime, 23)
    summary = resumed.fit(TensorBatches([X, Y], 16, cpu_runtime, seed=3), resume=True)
    assert summary["resumed_from"].endswith("step_00000012.pt")
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_from_a_mid_interval_checkpoint_repeats_the_lost_steps(tmp_path, cpu_runtime):
    full = make_trainer(tmp_path / "full", cpu_runtime, 17)
    full.fit(TensorBatches([X, Y], 16, cpu_runtime, seed=3))
    part = make_trainer(tmp_path / "part", cpu_runtime, 17)
    part.config.max_steps = 13
    part.fit(TensorBatches([X, Y], 16, cpu_runtime, seed=3))
    (tmp_path / "part" / "checkpoints" / "step_00000013.pt").unlink()  # the kill came before step 13's save
    resumed = make_trainer(tmp_path / "part", cpu_runtime, 17)
    resumed.fit(TensorBatches([X, Y], 16, cpu_runtime, seed=3), resume=True)
    assert resumed.step == 17
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_metrics_summary_and_loss_weights(tmp_path, cpu_runtime):
    trainer = make_trainer(tmp_path, cpu_runtime, 8)
    summary = trainer.fit(TensorBatches([X, Y], 16, cpu_runtime))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8]
    for row in rows:
        assert row["loss"] == pytest.approx(row["mse"] + 0.5 * row["l1"], rel=1e-5)
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 8 == summary["steps"]


def test_non_finite_loss_names_step_and_term(tmp_path, cpu_runtime):
    def bad_step(model, batch, step):
        out = mse_step(model, batch, step)
        if step == 2:
            out["l1"] = out["l1"] * float("nan")
        return out

    trainer = make_trainer(tmp_path, cpu_runtime, 5, step_fn=bad_step)
    with pytest.raises(LowlabelError, match=r"non-finite loss at step 2: l1=nan"):
        trainer.fit(TensorBatches([X, Y], 16, cpu_runtime))


def test_eval_callback_and_after_step(tmp_path, cpu_runtime):
    seen = []

    def step_with_aux(model, batch, step):
        return mse_step(model, batch, step), step * 10

    trainer = make_trainer(tmp_path, cpu_runtime, 6, step_fn=step_with_aux, eval_every=3)
    trainer.eval_fn = lambda model, step: {"train_mode": float(model.training), "step": step}
    trainer.after_step = lambda model, aux, step: seen.append((aux, step))
    trainer.fit(TensorBatches([X, Y], 16, cpu_runtime))
    assert seen == [(s * 10, s + 1) for s in range(6)]
    assert trainer.last_eval == {"train_mode": 0.0, "step": 6.0}


def test_dataset_batches_cover_an_epoch_and_resume_mid_epoch(cpu_runtime):
    data = torch.utils.data.TensorDataset(torch.arange(40))
    source = DatasetBatches(data, 8, cpu_runtime, seed=5)
    epoch = [b[0] for b in source.epoch(2)]
    assert source.steps_per_epoch == 5 and sorted(torch.cat(epoch).tolist()) == list(range(40))
    tail = [b[0] for b in source.epoch(2, start=3)]
    assert all(torch.equal(a, b) for a, b in zip(epoch[3:], tail, strict=True))
    assert not torch.equal(torch.cat(epoch), torch.cat([b[0] for b in source.epoch(3)]))


def test_too_little_data_is_a_clear_error(cpu_runtime):
    with pytest.raises(LowlabelError, match="fewer than one batch"):
        DatasetBatches(torch.utils.data.TensorDataset(torch.arange(3)), 8, cpu_runtime)
    with pytest.raises(LowlabelError, match="disagree"):
        TensorBatches([torch.zeros(3), torch.zeros(4)], 2, cpu_runtime)
