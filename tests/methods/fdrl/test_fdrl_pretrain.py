"""FDRL's identity pretraining (the demo's stand-in for the MS-Celeb-1M backbone): identities disjoint from the
expression worlds', held-out faces, a backbone file that `Config.pretrained` loads, and the per-seed cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from lowlabel.data.synth.faces import identity_params
from lowlabel.engine import runtime as rt
from lowlabel.methods.fdrl import data as fdata
from lowlabel.methods.fdrl import pretrain, recipe
from lowlabel.methods.fdrl.pretrain import HELD_OUT, PretrainSettings, identity_splits, pretrain_backbone

TINY = PretrainSettings(identities=3, images_per_identity=6, epochs=2, lr=1e-3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_cfg(seed: int = 0) -> recipe.Config:
    cfg = recipe.Config(width=4, image_size=32, batch_size=6,
                        world=recipe.WorldConfig(train_identities=3, test_identities=2, images_per_identity=4,
                                                 size=32, seed=seed))
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, log_every=10**9, seed=seed))


def test_pretraining_identities_are_disjoint_from_the_expression_identities() -> None:
    world = _tiny_cfg(seed=5).world
    train, _ = identity_splits(world, TINY)
    drawn = fdata.faces_world(TINY.identities, TINY.images_per_identity + HELD_OUT, seed=5 + pretrain.SEED_OFFSET,
                              size=32)
    assert torch.equal(train.inputs[0], drawn["images"][0])  # the split is the world of that seed

    def params(seed: int, n: int) -> set[bytes]:
        return {identity_params(i, seed).tobytes() for i in range(n)}

    ours = params(5 + pretrain.SEED_OFFSET, 200)
    assert not ours & params(5, 200) and not ours & params(5 + 10_000, 200)  # expression train / test worlds


def test_held_out_faces_of_every_identity() -> None:
    train, held = identity_splits(_tiny_cfg().world, TINY)
    assert np.bincount(train.labels.numpy()).tolist() == [TINY.images_per_identity] * TINY.identities
    assert np.bincount(held.labels.numpy()).tolist() == [HELD_OUT] * TINY.identities
    assert train.classes == held.classes == ("id0", "id1", "id2")
    flat = {bytes(x.numpy().tobytes()) for x in train.inputs}
    assert not any(bytes(x.numpy().tobytes()) in flat for x in held.inputs)


def test_backbone_file_loads_through_config_and_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = rt.init("cpu", seed=0)
    cfg = _tiny_cfg()
    path, record = pretrain_backbone(cfg, TINY, out=tmp_path, runtime=runtime)
    saved = torch.load(path, weights_only=True)
    assert 0.0 <= record["identity_accuracy"] <= 1.0 and not any(k.startswith("fc.") for k in saved)
    loaded = recipe.build_model(dataclasses.replace(cfg, head="mlp", pretrained=str(path))).backbone.state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    fresh = recipe.build_model(cfg).backbone.state_dict()
    assert not torch.equal(fresh["conv1.weight"], saved["conv1.weight"])

    calls = []
    real = recipe.train_model
    monkeypatch.setattr(recipe, "train_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert pretrain_backbone(cfg, TINY, out=tmp_path, runtime=runtime) == (path, record) and not calls
    pretrain_backbone(cfg, dataclasses.replace(TINY, epochs=1), out=tmp_path, runtime=runtime)
    assert calls == [1]
