"""DyML recipe: the contract, official defaults, a tiny run of each loss with evaluation, kill-and-resume, the
m-per-class batches, the built-in worlds and the data-path errors."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lowlabel.engine import runtime as rt
from lowlabel.engine.recipe import contract_problems
from lowlabel.errors import LowlabelError
from lowlabel.methods.dyml import recipe, worlds
from lowlabel.methods.dyml.batches import ArrayImages, MPerClassBatches, centre_crop


def _tiny(steps: int = 4, loss: str = "csl") -> recipe.Config:
    cfg = recipe.tiny_config()
    return dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, name=loss),
                               train=dataclasses.replace(cfg.train, max_steps=steps))


def test_contract() -> None:
    assert contract_problems("dyml") == []


def test_official_defaults() -> None:
    cfg = recipe.Config()
    assert cfg.loss.name == "csl" and cfg.loss.margins == [0.25, 0.35, 0.45] and cfg.loss.scale == 32.0
    assert (cfg.data.m_per_class, cfg.data.classes_per_batch) == (4, 64)  # batch 256 = 64 classes x 4
    assert (cfg.data.image_size, cfg.data.test_resize, cfg.data.crop_scale, cfg.data.flip) == (224, 256, [0.16, 1.0],
                                                                                               True)
    assert cfg.data.crop_ratio == pytest.approx([0.75, 4 / 3])
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.nesterov, o.weight_decay, o.schedule) == ("sgd", 0.1, 0.9, True, 1e-4, "cosine")
    assert cfg.train.epochs == 100 and cfg.train.max_steps == 0
    assert (cfg.model.dim, cfg.model.pool, cfg.model.layer_norm) == (512, "avg", True)


@pytest.mark.parametrize("loss", ["csl", "fine_only"])
def test_initialisation_comes_from_the_seeds_not_from_what_ran_before(loss: str) -> None:
    base = _tiny(loss=loss)
    cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, in_channels=3, n_classes=[6, 3, 2]))
    torch.manual_seed(1)
    first = recipe.build_model(cfg).state_dict()
    torch.rand(1000)  # a run before this one used the global stream
    state = torch.random.get_rng_state()
    again = recipe.build_model(cfg).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)  # and building leaves it alone
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = recipe.build_model(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=1))).state_dict()
    net = [k for k in first if k.startswith("net.") and first[k].dim() > 1]  # conv / linear weights
    assert net and not any(torch.equal(first[k], other[k]) for k in net)  # train.seed sets the network
    crit = [k for k in first if k.startswith("criterion.") and first[k].is_floating_point()]
    assert crit and all(torch.equal(first[k], other[k]) for k in crit)  # proxies follow loss.proxy_seed only


@pytest.mark.parametrize("loss", ["csl", "fine_only", "level_sum"])
def test_tiny_run_trains_writes_config_and_evaluates(tmp_path: Path, loss: str) -> None:
    runtime = rt.init("cpu", seed=0)
    summary = recipe.train(_tiny(loss=loss), data=None, run_dir=tmp_path, runtime=runtime, resume=False)
    assert summary["steps"] == 4 and set(summary["test"]) == {"fine", "middle", "coarse", "overall"}
    assert all(0 <= v <= 1 for level in summary["test"].values() for v in level.values())
    saved = (tmp_path / "config.yaml").read_text()
    assert "in_channels: 3" in saved and "- 44\n  - 9\n  - 3" in saved  # the tiny world trains 44 fine classes
    from lowlabel.engine.config import load_config

    cfg = load_config(recipe.Config, tmp_path / "config.yaml")
    got = recipe.evaluate(cfg, checkpoint=tmp_path / "checkpoints" / "step_00000004.pt", data=None, runtime=runtime)
    assert got["overall/asi"] == pytest.approx(summary["test"]["overall"]["asi"], abs=1e-6)
    assert got["fine/map"] == pytest.approx(summary["test"]["fine"]["map"], abs=1e-6)
    names = {"csl": {"csl"}, "fine_only": {"fine"}, "level_sum": {"fine", "middle", "coarse"}}[loss]
    assert set(summary["final_losses"]) == {"loss"} | names


def test_kill_and_resume_gives_the_same_weights(tmp_path: Path) -> None:
    runtime = rt.init("cpu", seed=0)
    cfg = _tiny(4)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    recipe.train(cfg, data=None, run_dir=straight, runtime=runtime, resume=False)
    shutil.copytree(straight, resumed)
    (resumed / "checkpoints" / "step_00000004.pt").unlink()  # killed after the checkpoint of step 2
    summary = recipe.train(cfg, data=None, run_dir=resumed, runtime=runtime, resume=True)
    assert summary["resumed_from"].endswith("step_00000002.pt")
    a = torch.load(straight / "checkpoints" / "step_00000004.pt", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoints" / "step_00000004.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "criterion.hierarchy" in a and "criterion.weight" in a


def test_m_per_class_batches_are_balanced_deterministic_and_resumable() -> None:
    runtime = rt.init("cpu", seed=0)
    labels = np.stack([np.repeat(np.arange(6), [6, 6, 6, 6, 5, 1]), np.repeat(np.arange(3), 10), np.zeros(30)], 1)
    images = ArrayImages(torch.arange(30, dtype=torch.uint8).view(30, 1, 1, 1).expand(30, 1, 4, 4).contiguous())
    kw = dict(m=2, classes_per_batch=3, size=4, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, mean=(0.0,),
              std=(1 / 255,), seed=5)
    source = MPerClassBatches(images, labels.astype(np.int64), runtime, **kw)
    assert source.steps_per_epoch == 5
    order = source.order(1)
    assert order == MPerClassBatches(images, labels.astype(np.int64), runtime, **kw).order(1)
    assert order != source.order(2)
    for batch in order:
        fine = labels[batch, 0]
        assert all((fine == c).sum() == 2 for c in np.unique(fine)) and len(np.unique(fine)) == 3
    batches = list(source.epoch(1))
    x, y = batches[1]
    assert x.shape == (6, 1, 4, 4) and torch.equal(y, torch.from_numpy(labels[order[1]].astype(np.int64)))
    assert torch.allclose(x[:, 0, 0, 0], torch.tensor(order[1], dtype=torch.float32), atol=1e-3)  # full-image crop
    later = list(source.epoch(1, start=3))
    assert len(later) == 2 and torch.equal(later[0][0], batches[3][0])
    with pytest.raises(LowlabelError, match="classes_per_batch"):
        MPerClassBatches(images, labels.astype(np.int64), runtime, **{**kw, "classes_per_batch": 7})


def test_centre_crop_is_the_test_transform() -> None:
    images = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    assert torch.equal(centre_crop(images, 8, 8), images)
    assert torch.allclose(centre_crop(images, 4, 8), images[:, :, 2:6, 2:6])  # resize 8 -> 8, centre 4 of 8


def test_worlds_have_tree_hierarchies() -> None:
    images, labels = worlds.shapes_world(40, size=16, seed=3)
    assert images.shape == (40, 3, 16, 16) and images.dtype == np.uint8
    assert (labels[:, 1] == labels[:, 0] // 8).all() and (labels[:, 2] == labels[:, 1] // 3).all()
    images, labels = worlds.digits_world(seed=0)
    assert images.shape == (1797, 1, 16, 16) and labels[:, 0].max() == 39
    assert (labels[:, 0] // 4 == labels[:, 1]).all()
    assert (labels[:, 2] == np.array(worlds.DIGIT_FAMILY)[labels[:, 1]]).all()
    with pytest.raises(LowlabelError, match="world"):
        worlds.make_world("faces", per_class=1, size=16, seed=0)


def test_data_paths_and_config_errors(tmp_path: Path) -> None:
    assert recipe.data_kind(None) == "world"
    (tmp_path / "dyml" / "train").mkdir(parents=True)
    (tmp_path / "dyml" / "train" / "label.csv").write_text("fname, coarse_id, middle_id, fine_id0.jpg, 0, 0, 0\n")
    assert recipe.data_kind(tmp_path / "dyml") == "dyml"
    assert recipe.data_kind(tmp_path / "x.csv") == "csv"
    assert recipe.data_kind(tmp_path / "x.zip") == "omniglot"
    with pytest.raises(LowlabelError, match="--data"):
        recipe.data_kind(tmp_path / "labels.txt")
    with pytest.raises(LowlabelError, match="n_classes"):
        recipe.build_model(recipe.Config())
    cfg = recipe.tiny_config()
    images, labels = recipe.load_train(cfg, None)
    resolved = recipe.resolve(cfg, images, labels)
    with pytest.raises(LowlabelError, match="the data gives"):
        recipe.resolve(dataclasses.replace(resolved, model=dataclasses.replace(resolved.model, n_classes=[5, 9, 3])),
                       images, labels)
    with pytest.raises(LowlabelError, match=r"loss\.name"):
        recipe.build_model(dataclasses.replace(resolved, loss=dataclasses.replace(resolved.loss, name="triplet")))


def test_csv_data_trains_and_evaluates_open_set(tmp_path: Path) -> None:
    from PIL import Image

    rows = ["path,fine,middle,coarse"]
    rng = np.random.default_rng(0)
    for fine in range(8):
        for k in range(3):
            name = f"img_{fine}_{k}.png"
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / name)
            rows.append(f"{name},f{fine},m{fine // 2},{'ab'[fine // 4]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = recipe.tiny_config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, classes_per_batch=2, holdout=0.5),
                              train=dataclasses.replace(cfg.train, max_steps=2))
    summary = recipe.train(cfg, data=tmp_path / "labels.csv", run_dir=tmp_path / "run",
                           runtime=rt.init("cpu", seed=0), resume=False)
    assert summary["n_train"] == 12 and summary["n_classes"] == [4, 4, 2]
    assert 0 <= summary["test"]["coarse"]["asi"] <= 1
