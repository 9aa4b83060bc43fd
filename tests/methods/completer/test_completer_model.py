"""COMPLETER networks: the spec's parameter counts, output constraints, imputation, and the training step."""

from __future__ import annotations

import pytest
import torch

from lowlabel.engine import runtime as rt
from lowlabel.errors import LowlabelError
from lowlabel.methods.completer.model import Autoencoder, Completer, Predictor, pair_key
from lowlabel.methods.completer.recipe import smoke_case, step_fn_for


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("d1", "d2", "d_z", "ae1", "ae2", "pred"),
    [  # the spec's table (official model.py + configure.py)
        (1984, 512, 128, 8_544_192, 5_525_120, 166_656),
        (20, 59, 128, 4_516_028, 4_596_017, 166_656),
        (59, 40, 64, 4_464_881, 4_425_912, 150_208),
        (784, 784, 64, 5_951_856, 5_951_856, 150_208),
    ],
)
def test_parameter_counts_match_the_official_architecture(d1: int, d2: int, d_z: int, ae1: int, ae2: int,
                                                          pred: int) -> None:
    assert n_params(Autoencoder(d_in=d1, d_z=d_z)) == ae1
    assert n_params(Autoencoder(d_in=d2, d_z=d_z)) == ae2
    assert n_params(Predictor(d_z=d_z)) == pred


def test_outputs_live_where_the_spec_says() -> None:
    torch.manual_seed(0)
    model = Completer(view_dims=[5, 7], d_z=4, hidden=[16, 16], predictor_hidden=[8, 8])
    zs, x_hats, preds = model([torch.randn(10, 5), torch.randn(10, 7)])
    for z in [*zs, *preds.values()]:
        assert (z >= 0).all() and torch.allclose(z.sum(dim=1), torch.ones(10))
    assert all((x >= 0).all() for x in x_hats)  # BN + ReLU on the decoder output
    assert set(preds) == {"0_to_1", "1_to_0"}
    assert model([torch.randn(10, 5), torch.randn(10, 7)], predict=False)[2] == {}
    with pytest.raises(LowlabelError):
        Completer(view_dims=[5], d_z=4)


@pytest.mark.parametrize("n_views", [2, 3])
def test_embed_imputes_missing_latents_from_the_present_views(n_views: int) -> None:
    torch.manual_seed(1)
    dims = [3, 4, 5][:n_views]
    model = Completer(view_dims=dims, d_z=6, hidden=[8], predictor_hidden=[8]).eval()
    xs = [torch.rand(6, d) for d in dims]
    mask = torch.ones(6, n_views)
    mask[0, 0] = 0  # view 0 missing
    mask[1, 1] = 0  # view 1 missing
    if n_views == 3:
        mask[2, 0] = mask[2, 2] = 0  # only view 1 present
    fused = model.embed(xs, mask)
    assert fused.shape == (6, 6 * n_views)
    with torch.no_grad():
        zs = [ae.encode(x) for ae, x in zip(model.autoencoders, xs, strict=True)]
        others = [s for s in range(n_views) if s != 0]
        expected = sum(model.predictors[pair_key(s, 0)](zs[s])[0] for s in others) / len(others)
        torch.testing.assert_close(fused[0, :6], expected)
        torch.testing.assert_close(fused[0, 6:12], zs[1][0])  # present views are kept as encoded
        torch.testing.assert_close(fused[3], torch.cat([z[3] for z in zs]))  # complete row untouched
        if n_views == 3:
            torch.testing.assert_close(fused[2, :6], model.predictors["1_to_0"](zs[1])[2])
            torch.testing.assert_close(fused[2, 12:], model.predictors["1_to_2"](zs[1])[2])


@pytest.mark.parametrize("n_views", [2, 3])
def test_step_gives_pairwise_losses_and_gradients(n_views: int) -> None:
    torch.manual_seed(2)
    dims = [3, 4, 5][:n_views]
    model = Completer(view_dims=dims, d_z=4, hidden=[8], predictor_hidden=[8])
    batch = tuple(torch.rand(12, d) for d in dims)
    step_fn = step_fn_for(alpha=9.0, prediction_start=0.5, total_steps=6)  # L_pre from step 3 on
    before = step_fn(model, batch, 2)
    assert set(before) == {"cl", "rec"}  # before the start: no prediction term, as in the official warm-up
    sum(before.values()).backward()
    assert all(p.grad is None for p in model.predictors.parameters())
    model.zero_grad(set_to_none=True)
    after = step_fn(model, batch, 3)
    assert set(after) == {"cl", "rec", "pre"}
    sum(after.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert len(model.predictors) == n_views * (n_views - 1)


def test_smoke_case_trains_every_parameter() -> None:
    runtime = rt.init("cpu", seed=0)
    state = torch.get_rng_state()
    case = smoke_case(runtime)
    assert torch.equal(torch.get_rng_state(), state)  # built on a forked generator
    losses = case.step_fn(case.model, case.batch, 0)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in case.model.parameters())
