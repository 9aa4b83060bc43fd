"""The shared configuration parts and the method contract."""

from __future__ import annotations

import copy
import importlib.util
import math
from dataclasses import dataclass, field

import pytest
import torch

from lowlabel import registry
from lowlabel.engine import config as cfg_mod
from lowlabel.engine.recipe import (
    OptimConfig,
    TrainConfig,
    build_optimizer,
    build_scheduler,
    contract_problems,
    lr_factor,
)
from lowlabel.errors import LowlabelError


def test_total_steps_one_rule():
    assert TrainConfig(max_steps=7, epochs=3).total_steps(10) == 7  # steps win
    assert TrainConfig(epochs=3).total_steps(10) == 30
    with pytest.raises(LowlabelError, match=r"train\.epochs or train\.max_steps"):
        TrainConfig().total_steps(10)
    with pytest.raises(LowlabelError, match="no full batch"):
        TrainConfig(epochs=2).total_steps(0)


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (OptimConfig(schedule="constant"), [1.0] * 5),
        (OptimConfig(schedule="cosine"), [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2, 0.0]),
        (OptimConfig(schedule="step", milestones=[0.5, 0.75], gamma=0.1), [1.0, 1.0, 0.1, 0.01, 0.01]),
        # cos(π/3 · t/4): 1, cos(π/12), cos(π/6), cos(π/4), cos(π/3)
        (OptimConfig(schedule="truncated_cosine", cycles=1 / 3),
         [1.0, (math.sqrt(6) + math.sqrt(2)) / 4, math.sqrt(3) / 2, math.sqrt(0.5), 0.5]),
        (OptimConfig(schedule="truncated_cosine", cycles=1.0), [1.0, math.sqrt(0.5), 0.0, 0.0, 0.0]),  # clipped at 0
        (OptimConfig(schedule="exponential", gamma=0.5), [1.0, 1.0, 0.5, 0.5, 0.25]),  # 2 steps per epoch
        (OptimConfig(schedule="constant", warmup_steps=2), [0.0, 0.5, 1.0, 1.0, 1.0]),
    ],
)
def test_lr_factor_by_hand(cfg, expected):
    assert [lr_factor(s, 4, cfg, steps_per_epoch=2) for s in range(5)] == pytest.approx(expected)


def test_step_milestones_keep_their_shape_when_the_run_is_shortened():
    official = OptimConfig(schedule="step", milestones=[2500 / 6000, 5000 / 6000], gamma=0.1)
    assert [lr_factor(s, 6000, official) for s in (2499, 2500, 4999, 5000)] == pytest.approx([1, 0.1, 0.1, 0.01])
    assert [lr_factor(s, 600, official) for s in (249, 250, 499, 500)] == pytest.approx([1, 0.1, 0.1, 0.01])


def test_optimizers_and_scheduler():
    p = torch.nn.Parameter(torch.ones(3))
    sgd = build_optimizer([p], OptimConfig(name="sgd", lr=0.1, momentum=0.5, weight_decay=1e-4), lr_scale=2.0)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["lr"] == 0.2
    adam = build_optimizer([p], OptimConfig(name="adam", lr=1e-3, betas=[0.5, 0.9], eps=1e-6))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.5, 0.9)
    assert adam.param_groups[0]["eps"] == 1e-6
    sched = build_scheduler(sgd, OptimConfig(schedule="cosine"), total_steps=2)
    sgd.step()
    sched.step()
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.2 * 0.5)
    with pytest.raises(LowlabelError, match=r"optim\.name"):
        build_optimizer([p], OptimConfig(name="lamb"))
    with pytest.raises(LowlabelError, match=r"optim\.schedule"):
        build_scheduler(sgd, OptimConfig(schedule="linear"), total_steps=3)


@dataclass
class Inner:
    a: int = 1
    b: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class Schema:
    inner: Inner = field(default_factory=Inner)
    train: TrainConfig = field(default_factory=TrainConfig)


def test_config_precedence_defaults_file_options_set(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("inner:\n  a: 2\n  b: [5]\ntrain:\n  max_steps: 10\n  seed: 4\n")
    cfg = cfg_mod.load_config(Schema, file, ["train.seed=9"],
                              options={"train.max_steps": 20, "train.seed": 7, "inner.b": (3, 4), "inner.a": None})
    assert cfg.inner.a == 2  # file; the option was not given (None)
    assert cfg.inner.b == [3, 4] and cfg.train.max_steps == 20  # options beat the file
    assert cfg.train.seed == 9  # --set beats options
    assert cfg.train.log_every == TrainConfig().log_every  # default
    with pytest.raises(LowlabelError, match=r"unknown config key 'inner\.c'"):
        cfg_mod.load_config(Schema, options={"inner.c": 1})


def _built(slug: str) -> bool:
    """Ready, or far enough along to have a recipe: from then on the folder must satisfy the whole contract."""
    return registry.get(slug).ready or importlib.util.find_spec(f"lowlabel.methods.{slug}.recipe") is not None


@pytest.mark.parametrize("slug", [slug for slug in registry.METHODS if _built(slug)])
def test_every_built_method_satisfies_the_contract(slug):
    assert contract_problems(slug) == []


def test_a_method_lacking_a_part_is_reported(tmp_path, monkeypatch):
    package = tmp_path / "lowlabel_fake" / "methods" / "half"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "recipe.py").write_text("def build_model(config):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lowlabel.methods

    monkeypatch.setattr(lowlabel.methods, "__path__", [*lowlabel.methods.__path__, str(package.parent)])
    problems = contract_problems("half")
    assert "lowlabel.methods.half.losses is missing" in problems and "lowlabel.methods.half.demo is missing" in problems
    for name in ("losses", "model", "data", "demo", "cli"):
        (package / f"{name}.py").write_text("")
    problems = contract_problems("half")
    assert any("Config is missing" in p for p in problems)
    assert any("build_model takes (config), the contract says (cfg)" in p for p in problems)
    assert any("has no function run()" in p for p in problems)


def _two_kinds(model: torch.nn.Module) -> list[dict]:
    sgd = OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)
    return [{"params": [model.weight], "optim": sgd}, {"params": [model.bias], "weight_decay": 0.5}]


def test_groups_with_their_own_optimiser_step_like_separate_optimisers():
    torch.manual_seed(0)
    model, twin = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    adamw = OptimConfig(name="adamw", lr=0.01, weight_decay=0.01, schedule="step", milestones=[0.5], gamma=0.1)
    chain = build_optimizer(_two_kinds(model), adamw)
    sched = build_scheduler(chain, adamw, total_steps=4)
    # the same updates written out by hand: SGD on the weight, AdamW (group wd 0.5) on the bias, one schedule
    sgd = torch.optim.SGD([twin.weight], lr=0.1, momentum=0.9, weight_decay=1e-4)
    adam = torch.optim.AdamW([twin.bias], lr=0.01, weight_decay=0.5)
    x = torch.randn(8, 3)
    for step in range(4):
        for m in (model, twin):
            m.zero_grad()
            m(x).square().sum().backward()
        chain.step()
        sched.step()
        sgd.step()
        adam.step()
        factor = 0.1 if step + 1 >= 2 else 1.0
        sgd.param_groups[0]["lr"], adam.param_groups[0]["lr"] = 0.1 * factor, 0.01 * factor
    assert torch.equal(model.weight, twin.weight) and torch.equal(model.bias, twin.bias)
    assert [g["lr"] for g in chain.param_groups] == pytest.approx([0.01, 0.001])


def test_optimiser_chain_resumes_exactly():
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 2)
    adamw = OptimConfig(name="adamw", lr=0.01, schedule="cosine")
    x = torch.randn(8, 3)

    def run(m: torch.nn.Module, chain: torch.optim.Optimizer, sched: object, steps: range) -> None:
        for _ in steps:
            chain.zero_grad()
            m(x).square().sum().backward()
            chain.step()
            sched.step()

    start = {k: v.clone() for k, v in model.state_dict().items()}
    chain = build_optimizer(_two_kinds(model), adamw)
    sched = build_scheduler(chain, adamw, total_steps=6)
    run(model, chain, sched, range(3))
    saved = copy.deepcopy((chain.state_dict(), sched.state_dict(), model.state_dict()))  # as a checkpoint file
    run(model, chain, sched, range(3))
    other = torch.nn.Linear(3, 2)
    other.load_state_dict(start)
    chain2 = build_optimizer(_two_kinds(other), adamw)
    sched2 = build_scheduler(chain2, adamw, total_steps=6)
    other.load_state_dict(saved[2])
    chain2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    run(other, chain2, sched2, range(3))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True))
    with pytest.raises(LowlabelError, match="chain"):
        chain2.load_state_dict(torch.optim.SGD(model.parameters(), lr=0.1).state_dict())
