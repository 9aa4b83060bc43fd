"""SDD-FIQA recipe pieces: smoke step, regressor head shape, trunk initialisation, sharpness baseline."""

from __future__ import annotations

import numpy as np
import torch

from lowlabel.engine import runtime as rt
from lowlabel.methods.sdd_fiqa import recipe
from lowlabel.methods.sdd_fiqa.evaluation import laplacian_sharpness, verification_pairs
from lowlabel.methods.sdd_fiqa.model import FaceEmbedder, QualityRegressor


def test_smoke_case_trains_every_parameter() -> None:
    case = recipe.smoke_case(rt.init("cpu", seed=0))
    losses = case.step_fn(case.model, case.batch, 0)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in case.model.parameters())


def test_quality_head_is_the_official_one_and_trunk_is_copied() -> None:
    model = QualityRegressor(width=8, image_size=112)
    assert model.trunk.feature_shape == (64, 7, 7)  # 7x7 map as the official trunks at 112x112
    head_params = sum(p.numel() for p in model.head.parameters())
    assert head_params == 3136 * 2 + 1  # PReLU slopes + Linear weights + bias
    emb = FaceEmbedder(width=8, image_size=112)
    model.init_trunk_from(emb)
    for a, b in zip(model.trunk.state_dict().values(), emb.trunk.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_sharpness_and_pairs_by_hand() -> None:
    flat = np.full((1, 8, 8, 3), 100, np.uint8)
    checker = ((np.indices((8, 8)).sum(0) % 2) * 255).astype(np.uint8)[None, :, :, None].repeat(3, 3)
    s = laplacian_sharpness(np.concatenate([flat, checker]))
    assert s[0] == 0 and s[1] > 1000
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    gen, imp, gp, ip = verification_pairs(emb, torch.tensor([0, 0, 1]))
    assert gp.tolist() == [[0, 1]] and ip.tolist() == [[0, 2], [1, 2]]
    assert np.isclose(gen[0], 1 / np.sqrt(1.01)) and np.isclose(imp[0], 0.0)
