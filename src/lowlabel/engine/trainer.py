"""The training loop every recipe shares: a method supplies a step function returning named losses."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine.batches import BatchSource
from lowlabel.engine.recipe import OptimConfig, TrainConfig, build_optimizer, build_scheduler
from lowlabel.engine.runtime import Runtime, barrier, seed_everything
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json

Losses = Mapping[str, torch.Tensor]
StepFn = Callable[[nn.Module, Any, int], "Losses | tuple[Losses, Any]"]
AfterStepFn = Callable[[nn.Module, Any, int], None]
EvalFn = Callable[[nn.Module, int], Mapping[str, float]]


def move_to(batch: Any, device: torch.device) -> Any:
    """`batch` with every tensor inside (tuples, lists, dicts) moved to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to(v, device) for v in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    return batch


def unwrap(model: nn.Module) -> nn.Module:
    """The method's own module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class Trainer:
    """Runs `step_fn(model, batch, step)` for the configured number of steps and optimises the weighted sum of its
    losses with the optimiser and schedule of `optim` (over `params`, default: every parameter that requires grad).

    The run's length is resolved once, in `fit`, by `TrainConfig.total_steps` (max_steps, else epochs x the batch
    source's steps per epoch), and the lr schedule is built for that length. Under torchrun the model is wrapped in
    DistributedDataParallel: `step_fn` must reach everything that needs a gradient through `model(...)` (its
    forward); `unwrap(model)` gives the inner module for buffers and frozen parts. `step_fn` may return
    `(losses, aux)`; `after_step(unwrapped_model, aux, step)` then runs after the optimizer step (e.g. to enqueue
    keys). A non-finite loss stops the run with an error naming the step and the term. Checkpoints hold model
    (with buffers), optimizer, scheduler, step and RNG states; `fit(resume=True)` continues from the newest
    checkpoint of `run_dir`, and on one process ends bit-identical to an uninterrupted run.
    """

    def __init__(
        self,
        model: nn.Module,
        step_fn: StepFn,
        *,
        config: TrainConfig,
        optim: OptimConfig,
        runtime: Runtime,
        params: Iterable[Any] | None = None,
        lr_scale: float = 1.0,
        run_dir: Path | None = None,
        loss_weights: Mapping[str, float] | None = None,
        eval_fn: EvalFn | None = None,
        after_step: AfterStepFn | None = None,
        find_unused_parameters: bool = False,
    ) -> None:
        self.model = model.to(runtime.device)
        trainable = params if params is not None else [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(trainable, optim, lr_scale=lr_scale)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # built in fit, once the length is known
        self.step_fn, self.optim = step_fn, optim
        self.config, self.runtime = config, runtime
        self.total_steps = config.max_steps
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.loss_weights = dict(loss_weights or {})
        self.eval_fn, self.after_step = eval_fn, after_step
        self.step = 0
        self.last_losses: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self.wrapped: nn.Module = model
        if runtime.distributed:
            device_ids = [runtime.device] if runtime.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(
                model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
            )

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "step": self.step,
            "rng": ckpt.rng_state(),
        }

    def save(self) -> Path | None:
        """Write a checkpoint for the current step (rank 0) and prune old ones."""
        if self.run_dir is None:
            return None
        path = None
        if self.runtime.is_main:
            path = ckpt.atomic_save(self.state_dict(), ckpt.checkpoint_path(self.run_dir, self.step))
            ckpt.prune_checkpoints(self.run_dir, self.config.keep_checkpoints)
        barrier()
        return path

    def load(self, path: Path) -> None:
        state = ckpt.load(path, map_location=self.runtime.device)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise LowlabelError(f"checkpoint {path} does not fit this model/config: {str(err)[:300]}") from None
        self.step = int(state["step"])
        if self.runtime.distributed:  # each rank continues its own stream, derived from the step
            seed_everything(self.config.seed + self.runtime.rank + 7919 * self.step)
        else:
            ckpt.set_rng_state(state["rng"])

    # ----------------------------------------------------------------- loop
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.amp and self.runtime.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _objective(self, losses: Losses) -> torch.Tensor:
        if not losses:
            raise LowlabelError("step function returned no losses")
        terms = [self.loss_weights.get(name, 1.0) * value for name, value in losses.items()]
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        if not bool(torch.isfinite(values).all()):
            bad = [name for name, v in zip(losses, values.tolist(), strict=True) if not math.isfinite(v)]
            raise LowlabelError(
                f"non-finite loss at step {self.step}: {', '.join(f'{n}={losses[n].item()}' for n in bad)}; "
                "lower the learning rate, check the inputs for NaN/inf, or enable grad clipping"
            )
        return torch.stack([t.reshape(()).float() for t in terms]).sum()

    def train_step(self, batch: Any) -> dict[str, float] | None:
        """One optimisation step on `batch`; returns the loss values on logging steps."""
        batch = move_to(batch, self.runtime.device)
        self.wrapped.train()
        with self._autocast():
            out = self.step_fn(self.wrapped, batch, self.step)
        losses, aux = out if isinstance(out, tuple) else (out, None)
        total = self._objective(losses)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        if self.after_step is not None:
            self.after_step(self.model, aux, self.step)
        if self.step % max(self.config.log_every, 1) == 0 or self.step == self.total_steps:
            values = {"loss": float(total.detach())}
            values.update({name: float(v.detach()) for name, v in losses.items()})
            return values
        return None

    def fit(self, batches: BatchSource, resume: bool = False) -> dict[str, Any]:
        """Train for the resolved number of steps and return the run summary (also written to run_dir/summary.json)."""
        if batches.steps_per_epoch <= 0:
            raise LowlabelError("the data gives no full batch; add data or lower the batch size")
        self.total_steps = self.config.total_steps(batches.steps_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, self.optim, total_steps=self.total_steps,
                                         steps_per_epoch=batches.steps_per_epoch)
        resumed_from = None
        if resume and self.run_dir is not None and (latest := ckpt.newest_checkpoint(self.run_dir)) is not None:
            self.load(latest)
            resumed_from = str(latest)
        elif self.step == 0:
            seed_everything(self.config.seed + self.runtime.rank)
        log = _Log(self.run_dir, self.runtime, self.total_steps, start=self.step)
        if resumed_from:
            log.line(f"resumed from {resumed_from} at step {self.step}")
        t0 = time.perf_counter()
        with log:
            while self.step < self.total_steps:
                epoch, start = divmod(self.step, batches.steps_per_epoch)
                for batch in batches.epoch(epoch, start):
                    values = self.train_step(batch)
                    if values is not None:
                        self.last_losses = values
                        lr = self.optimizer.param_groups[0]["lr"]
                        log.record({"step": self.step, "epoch": epoch, "lr": lr, **values})
                    log.advance(self.step, self.last_losses)
                    if self.eval_fn is not None and self.config.eval_every > 0 and (
                        self.step % self.config.eval_every == 0 or self.step == self.total_steps
                    ):
                        self.evaluate(log)
                    if self.step % max(self.config.checkpoint_every, 1) == 0 or self.step == self.total_steps:
                        self.save()
                    if self.step >= self.total_steps:
                        break
        summary = {
            "steps": self.step,
            "seconds": time.perf_counter() - t0,
            "final_losses": self.last_losses,
            "eval": self.last_eval,
            "resumed_from": resumed_from,
        }
        if self.run_dir is not None and self.runtime.is_main:
            write_json(self.run_dir / "summary.json", summary)
        return summary

    def evaluate(self, log: _Log | None = None) -> dict[str, float]:
        """Run the eval callback (every rank; rank 0 logs) and return its metrics."""
        if self.eval_fn is None:
            return {}
        self.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in self.eval_fn(self.model, self.step).items()}
        self.model.train()
        self.last_eval = metrics
        if log is not None:
            log.record({"step": self.step, **{f"eval/{k}": v for k, v in metrics.items()}})
        return metrics


class _Log:
    """metrics.jsonl on rank 0, plus a live progress bar on a terminal or plain lines otherwise."""

    def __init__(self, run_dir: Path | None, runtime: Runtime, total: int, start: int) -> None:
        self.active = runtime.is_main
        self.file = None
        if self.active and run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 - closed in __exit__
        self.total, self.start, self.t0 = total, start, time.perf_counter()
        self.progress = None
        if self.active and sys.stdout.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
            )
            self.task = self.progress.add_task("train", total=total, completed=start, losses="")

    def __enter__(self) -> _Log:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.file is not None:
            self.file.close()

    def line(self, text: str) -> None:
        if self.active:
            print(text, flush=True)

    def record(self, row: Mapping[str, Any]) -> None:
        if self.file is not None:
            try:
                self.file.write(json.dumps({**row, "time": round(time.perf_counter() - self.t0, 3)}) + "\n")
                self.file.flush()
            except OSError as err:  # an appended log cannot be written atomically; a full disk is still named
                raise LowlabelError(f"could not write {self.file.name}: {err.strerror or err}") from err
        if self.active and self.progress is None:
            done = row["step"] - self.start
            eta = (time.perf_counter() - self.t0) / max(done, 1) * (self.total - row["step"])
            shown = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("step", "epoch") and
                             isinstance(v, float))
            print(f"step {row['step']}/{self.total} {shown} eta {eta:.0f}s", flush=True)

    def advance(self, step: int, losses: Mapping[str, float]) -> None:
        if self.progress is not None:
            shown = " ".join(f"{k}={v:.4g}" for k, v in losses.items())
            self.progress.update(self.task, completed=step, losses=shown)
