"""The contract every method folder satisfies, and the configuration parts every method shares.

A method `lowlabel.methods.<slug>` is six modules (see docs/adding_a_method.md):
  losses.py  pure functions of tensors          model.py  nn.Modules with typed keyword arguments
  data.py    every file parser                  recipe.py Config + build/train/evaluate/smoke case (`RecipeModule`)
  demo.py    the demo and the figures hook (`DemoModule`)      cli.py   the method's own sub-commands
`contract_problems(slug)` lists what a method folder lacks; the registry-wide tests run it for every method.

Config precedence, one rule everywhere: dataclass defaults < `--config FILE` < a command's own options < `--set`.
Training length, one rule everywhere: `TrainConfig.total_steps`, resolved once by the Trainer.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from lowlabel.errors import LowlabelError

if TYPE_CHECKING:
    from lowlabel.engine.demo import DemoResult, SmokeCase
    from lowlabel.engine.runtime import Runtime


@dataclass
class TrainConfig:
    """How long and how the training loop runs; each method's Config holds one with its official values.

    Length: `max_steps` optimiser steps when it is above 0, else `epochs` passes over the data (`total_steps`).
    """

    epochs: int = 0
    max_steps: int = 0
    log_every: int = 20
    checkpoint_every: int = 500  # steps; the last step is always saved
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps; 0 = no evaluation during training
    grad_clip: float = 0.0  # max global grad norm; 0 disables clipping
    amp: bool = True  # bf16 autocast, on CUDA only
    seed: int = 0

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's length in optimiser steps: `max_steps` if set, else `epochs * steps_per_epoch`."""
        if self.max_steps < 0 or self.epochs < 0:
            raise LowlabelError(f"train.max_steps={self.max_steps}, train.epochs={self.epochs}: must not be negative")
        if self.max_steps > 0:
            return self.max_steps
        if self.epochs > 0:
            if steps_per_epoch <= 0:
                raise LowlabelError("the data gives no full batch; add data or lower the batch size")
            return self.epochs * steps_per_epoch
        raise LowlabelError("set train.epochs or train.max_steps above 0 (e.g. --set train.max_steps=1000)")


SCHEDULES = ("constant", "cosine", "truncated_cosine", "step", "exponential")


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Schedules keep their shape when the run's length changes: `step` milestones are fractions of the run (the
    official 2,500 and 5,000 of 6,000 iterations are 0.41667 and 0.83333), `exponential` decays by `gamma` per
    epoch, `cosine` goes to 0 at the last step as 0.5(1 + cos(π t/T)), `truncated_cosine` is max(0, cos(π c t/T))
    with c = `cycles` (FixMatch-style code: c = 7/16 ends at 0.195 of the base lr); `warmup_steps` ramps linearly
    from 0 first.
    """

    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam/AdamW only
    eps: float = 1e-8  # Adam/AdamW only
    fused: bool = False  # Adam/AdamW: one kernel for all parameters (same update, rounding differs at ~1e-8)
    weight_decay: float = 0.0
    schedule: str = "constant"
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    cycles: float = 0.5  # truncated_cosine only
    warmup_steps: int = 0


def lr_factor(step: int, total: int, cfg: OptimConfig, steps_per_epoch: int = 1) -> float:
    """The multiplier of the base learning rate at `step` of a `total`-step run under `cfg`'s schedule."""
    warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    if cfg.schedule == "constant":
        return warm
    if cfg.schedule == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(step / max(total, 1), 1.0)))
    if cfg.schedule == "truncated_cosine":
        return warm * max(0.0, math.cos(math.pi * cfg.cycles * min(step / max(total, 1), 1.0)))
    if cfg.schedule == "step":
        return warm * cfg.gamma ** sum(step >= round(m * total) for m in cfg.milestones)
    if cfg.schedule == "exponential":
        return warm * cfg.gamma ** (step // max(steps_per_epoch, 1))
    raise LowlabelError(f"optim.schedule='{cfg.schedule}': use one of {', '.join(SCHEDULES)}")


def _one_optimizer(params: list[Any], cfg: OptimConfig, lr_scale: float) -> torch.optim.Optimizer:
    lr = cfg.lr * lr_scale
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name in ("adam", "adamw"):
        kind = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return kind(params, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                    fused=cfg.fused or None)
    raise LowlabelError(f"optim.name='{cfg.name}': use sgd, adam or adamw")


class OptimizerChain(torch.optim.Optimizer):
    """Several optimisers stepping as one (e.g. SGD on a backbone, AdamW on the rest, as SOHO's `AdamwSGD`): one
    scheduler drives every group's lr, one checkpoint entry holds every state. `param_groups` is read through to the
    inner optimisers, so it stays right after they load a state (which replaces their group dicts)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:  # no super().__init__: it wants params
        self.optimizers = optimizers
        self.defaults: dict[str, Any] = {}
        self.state: dict[Any, Any] = {}  # each inner optimiser keeps its own

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"chain": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        states = state_dict.get("chain")
        if states is None or len(states) != len(self.optimizers):
            raise LowlabelError(f"the checkpoint's optimiser state is not a chain of {len(self.optimizers)} "
                                "optimisers: it was saved by a run with other optimiser settings")
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)


def build_optimizer(params: Iterable[Any], cfg: OptimConfig, *, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """The optimiser of `cfg` over `params` (tensors or param-group dicts) at `cfg.lr * lr_scale`.

    A group dict may carry its own `"optim": OptimConfig` (algorithm, lr, momentum, decay...); the groups are then
    split by optimiser and returned as one `OptimizerChain`. `cfg`'s schedule drives every group either way.
    """
    groups = list(params)
    if not any(isinstance(g, dict) and "optim" in g for g in groups):
        return _one_optimizer(groups, cfg, lr_scale)
    by_config: dict[int, tuple[OptimConfig, list[Any]]] = {}
    for group in groups:
        own = group.get("optim", cfg) if isinstance(group, dict) else cfg
        rest = {k: v for k, v in group.items() if k != "optim"} if isinstance(group, dict) else {"params": [group]}
        by_config.setdefault(id(own), (own, []))[1].append(rest)
    return OptimizerChain([_one_optimizer(gs, own, lr_scale) for own, gs in by_config.values()])


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, *, total_steps: int,
                    steps_per_epoch: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    """A torch scheduler multiplying every base lr by `lr_factor` (stepped once per optimiser step)."""
    lr_factor(0, total_steps, cfg, steps_per_epoch)  # an unknown schedule fails here, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg, steps_per_epoch))


# ------------------------------------------------------------------------------------------------ the contract
@runtime_checkable
class RecipeModule(Protocol):
    """`lowlabel.methods.<slug>.recipe`: configuration and training wiring, nothing about demos or printing."""

    Config: type  # a dataclass with `train: TrainConfig` and `optim: OptimConfig`, defaults = official values

    def build_model(self, cfg: Any) -> torch.nn.Module: ...

    def train(self, cfg: Any, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict: ...

    def evaluate(self, cfg: Any, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]: ...

    def smoke_case(self, runtime: Runtime) -> SmokeCase: ...


@runtime_checkable
class DemoModule(Protocol):
    """`lowlabel.methods.<slug>.demo`: the built-in-data comparison and the method's figures for reports."""

    def run(self, *, quick: bool, out: Path, runtime: Runtime) -> DemoResult: ...

    def figures(self, run_dir: Path) -> list[Path]: ...


FILES = ("losses", "model", "data", "recipe", "demo", "cli")
_SIGNATURES = {
    RecipeModule: {"build_model": ["cfg"], "train": ["cfg", "data", "run_dir", "runtime", "resume"],
                   "evaluate": ["cfg", "checkpoint", "data", "runtime"], "smoke_case": ["runtime"]},
    DemoModule: {"run": ["quick", "out", "runtime"], "figures": ["run_dir"]},
}


def _signature_problems(module: Any, protocol: type) -> list[str]:
    problems = []
    for name, params in _SIGNATURES[protocol].items():
        fn = getattr(module, name, None)
        if not callable(fn):
            problems.append(f"{module.__name__} has no function {name}()")
            continue
        have = list(inspect.signature(fn).parameters)
        if have[: len(params)] != params:
            problems.append(f"{module.__name__}.{name} takes ({', '.join(have)}), the contract says "
                            f"({', '.join(params)})")
    return problems


def _config_problems(module: Any) -> list[str]:
    config = getattr(module, "Config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return [f"{module.__name__}.Config is missing or not a dataclass"]
    fields = {f.name: f for f in dataclasses.fields(config)}
    instance = config()
    return [f"{module.__name__}.Config has no `{name}: {kind.__name__}`" for name, kind in
            (("train", TrainConfig), ("optim", OptimConfig))
            if name not in fields or not isinstance(getattr(instance, name), kind)]


def load_model(build_model: Callable[[Any], torch.nn.Module], cfg: Any, checkpoint: Path,
               device: torch.device | str = "cpu") -> torch.nn.Module:
    """`build_model(cfg)` (a recipe's builder) on `device` with the weights of `checkpoint`, in eval mode; clear
    errors when the file is missing, corrupt or does not fit."""
    from lowlabel.engine.checkpoint import load_into

    return load_into(build_model(cfg).to(device), checkpoint, map_location=device).eval()


def contract_problems(slug: str) -> list[str]:
    """What the method folder `lowlabel.methods.<slug>` lacks of the contract (empty when it satisfies it)."""
    package = f"lowlabel.methods.{slug}"
    if importlib.util.find_spec(package) is None:
        return [f"{package} does not exist"]
    missing = [f"{package}.{name} is missing" for name in FILES
               if importlib.util.find_spec(f"{package}.{name}") is None]
    if missing:
        return missing
    recipe = importlib.import_module(f"{package}.recipe")
    demo = importlib.import_module(f"{package}.demo")
    return _config_problems(recipe) + _signature_problems(recipe, RecipeModule) + _signature_problems(demo,
                                                                                                      DemoModule)
