"""Registry-wide behaviour tests: every ready method builds, steps, gets its gradients right, round-trips, and its
quick demo beats its baseline."""

from __future__ import annotations

import pytest
import torch

from lowlabel import registry

READY = [m.slug for m in registry.ready()]
if not READY:
    pytest.skip("no method is ready yet", allow_module_level=True)


@pytest.mark.parametrize("slug", READY)
def test_one_step_gives_finite_losses_and_the_right_gradients(slug, cpu_runtime):
    case = registry.get(slug).recipe().smoke_case(cpu_runtime)
    model = case.model.to(cpu_runtime.device).train()
    out = case.step_fn(model, case.batch, 0)
    losses = out[0] if isinstance(out, tuple) else out
    assert losses and all(torch.isfinite(v).all() for v in losses.values())
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        frozen = name.startswith(case.frozen_prefixes) if case.frozen_prefixes else False
        if frozen:
            assert p.grad is None or not p.grad.any(), f"{slug}: frozen parameter {name} got a gradient"
        elif p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{slug}: {name} got no gradient"


@pytest.mark.parametrize("slug", READY)
def test_state_dict_round_trips(slug, cpu_runtime, tmp_path):
    from lowlabel.engine import checkpoint

    recipe = registry.get(slug).recipe()
    model = recipe.smoke_case(cpu_runtime).model
    path = checkpoint.atomic_save(model.state_dict(), tmp_path / "m.pt")
    fresh = recipe.smoke_case(cpu_runtime).model
    fresh.load_state_dict(checkpoint.load(path), strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k])


@pytest.mark.slow
@pytest.mark.parametrize("slug", READY)
def test_quick_demo_beats_its_baseline(slug, cpu_runtime, tmp_path):
    result = registry.get(slug).demo().run(quick=True, out=tmp_path, runtime=cpu_runtime)
    assert result.method in result.rows and result.baseline in result.rows
    assert result.wins, f"{slug}: {result.method} did not beat {result.baseline}: {result.rows}"
