from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lowlabel.engine.batches import DatasetBatches, TensorBatches
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.trainer import Trainer
from lowlabel.errors import LowlabelError

X = torch.randn(96, 5, generator=torch.Generator().manual_seed(1))
Y = X @ torch.randn(5, 1, generator=torch.Generator().manual_seed(2))


def mse_step(model, batch, step):
    x, y = batch
    return {"mse": ((model(x) - y) ** 2).mean(), "l1": (model(x) - y).abs().mean()}


class KilledError(Exception):
    """Stands in for a kill: raised by the step function at a chosen step."""


def make_trainer(run_dir, runtime, steps, step_fn=mse_step, kill_at=None, **cfg):
    def maybe_killed(model, batch, step):
        if step == kill_at:
            raise KilledError
        return step_fn(model, batch, step)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    optim = OptimConfig(name="sgd", lr=0.05, momentum=0.9, schedule="step", milestones=[0.4, 0.8], gamma=0.5)
    config = TrainConfig(max_steps=steps, log_every=4, checkpoint_every=5, **cfg)
    return Trainer(model, maybe_killed, config=config, optim=optim, runtime=runtime, run_dir=run_dir,
                   loss_weights={"l1": 0.5})


@pytest.mark.parametrize(("kill_at", "checkpoint"), [(12, 10), (15, 15)])
def test_killed_and_resumed_run_is_bit_identical(tmp_path, cpu_runtime, kill_at, checkpoint):
    full = make_trainer(tmp_path / "full", cpu_runtime, 23)
    full.fit(TensorBatches([X, Y], 16, cpu_runtime, seed=3))
    part = make_trainer(tmp_path / "part", cpu_runtime, 23, kill_at=kill_at)
    with pytest.raises(KilledError):
        part.fit(TensorBatches([X, Y], 16, cpu_runtime, seed=3))
    resumed = make_trainer(tmp_path / "part", cpu_runtime, 23)
    summary = resumed.fit(TensorBatches([X, Y], 16, cpu_runtime, seed=3), resume=True)
    assert summary["resumed_from"].endswith(f"step_{checkpoint:08d}.pt") and resumed.step == 23
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.25)  # both milestones passed


def test_epochs_resolve_the_length_and_the_schedule_once(tmp_path, cpu_runtime):
    trainer = make_trainer(tmp_path, cpu_runtime, 0, epochs=3)  # 96 samples / 16 = 6 steps per epoch
    lrs = []
    trainer.after_step = lambda model, aux, step: lrs.append(trainer.optimizer.param_groups[0]["lr"])
    summary = trainer.fit(TensorBatches([X, Y], 16, cpu_runtime))
    assert summary["steps"] == 18 == trainer.total_steps
    # milestones at round(0.4 * 18) = 7 and round(0.8 * 18) = 14: the lr after step s is the one for step s
    assert lrs == [0.05 * 0.5 ** ((s >= 7) + (s >= 14)) for s in range(1, 19)]


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
    # iterating leaves the global generator alone, so a resumed run's augmentations draw what the whole run drew
    before = torch.get_rng_state()
    list(source.epoch(4, start=1))
    assert torch.equal(before, torch.get_rng_state())


def test_too_little_data_is_a_clear_error(cpu_runtime):
    with pytest.raises(LowlabelError, match="fewer than one batch"):
        DatasetBatches(torch.utils.data.TensorDataset(torch.arange(3)), 8, cpu_runtime)
    with pytest.raises(LowlabelError, match="disagree"):
        TensorBatches([torch.zeros(3), torch.zeros(4)], 2, cpu_runtime)


def test_embed_runs_chunks_in_eval_mode_and_restores_the_mode():
    from lowlabel.engine.batches import embed

    model = nn.Sequential(nn.Linear(5, 3), nn.Dropout(0.9)).train()
    out = embed(model, X, batch_size=7)
    assert model.training and out.shape == (96, 3) and not out.requires_grad
    assert torch.allclose(out, model[0](X).detach(), atol=1e-6)  # dropout off, same as one big batch
    assert torch.equal(embed(lambda x: x * 2, X, batch_size=1000), X * 2)
    with pytest.raises(LowlabelError, match="batch_size"):
        embed(model, X, batch_size=0)
