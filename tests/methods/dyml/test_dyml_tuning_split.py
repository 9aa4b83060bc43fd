"""DyML's tuning split (settings chosen without the evaluation's test classes) and model specs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lowlabel.errors import LowlabelError
from lowlabel.methods.dyml import data, recipe, worlds


def _labels() -> np.ndarray:
    """4 middle classes x 8 fine classes x 3 samples; coarse = middle // 2."""
    fine = np.repeat(np.arange(32), 3)
    return np.stack([fine, fine // 8, fine // 16], axis=1)


def test_tuning_split_stays_inside_the_training_classes() -> None:
    labels = _labels()
    eval_train, eval_test = data.open_set_split(labels, holdout=0.25, seed=0)
    tune_train, tune_test = data.tuning_split(labels, holdout=0.25, seed=0, tuning_seed=1)
    eval_held = set(labels[eval_test, 0])
    tune_held, tune_seen = set(labels[tune_test, 0]), set(labels[tune_train, 0])
    assert not (tune_held | tune_seen) & eval_held  # no evaluation test class in either part
    assert not tune_held & tune_seen  # the tuning test classes are unseen in tuning training
    assert sorted(tune_train.tolist() + tune_test.tolist()) == eval_train.tolist()  # the evaluation's training side
    # per middle class: 8 fine -> 2 held out for evaluation; of the other 6, round(0.25 * 6) = 2 for tuning
    assert np.bincount(np.array(sorted(tune_held)) // 8).tolist() == [2, 2, 2, 2]
    assert len(tune_test) == 8 * 3


def test_tuning_split_is_fixed_by_its_seed() -> None:
    labels = _labels()
    first = data.tuning_split(labels, 0.25, 0, 1)
    assert np.array_equal(data.tuning_split(labels, 0.25, 0, 1)[1], first[1])
    assert not np.array_equal(data.tuning_split(labels, 0.25, 0, 2)[1], first[1])


def test_recipe_reads_the_tuning_split_of_the_world() -> None:
    cfg = recipe.tiny_config()
    cfg = dataclasses.replace(cfg, world=dataclasses.replace(cfg.world, per_class=3))
    w = cfg.world
    pool_labels = worlds.make_world(w.name, per_class=w.per_class, size=w.size, seed=w.seed)[1]
    eval_held = set(pool_labels[data.open_set_split(pool_labels, cfg.data.holdout, cfg.data.split_seed)[1], 0])
    tuned = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, tuning=True))
    test_fine = set(recipe.load_test(tuned, None)[0].gallery_labels[:, 0])
    _, train_labels = recipe.load_train(tuned, None)
    assert test_fine and not test_fine & eval_held
    # training sees every fine class except both held-out sets (labels remapped to 0..C-1)
    assert train_labels[:, 0].max() + 1 == len(set(pool_labels[:, 0])) - len(eval_held) - len(test_fine)


def test_tuning_split_refused_on_fixed_benchmark_lists(tmp_path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "label.csv").write_text("fname, coarse_id, middle_id, fine_id0.jpg, 0, 0, 0\n")
    cfg = recipe.Config(data=recipe.DataConfig(tuning=True))
    with pytest.raises(LowlabelError, match=r"data\.tuning=true"):
        recipe.load_train(cfg, tmp_path)
    with pytest.raises(LowlabelError, match=r"data\.tuning=true"):
        recipe.load_test(cfg, tmp_path)


def test_model_specs() -> None:
    cfg = recipe.Config()
    ms = recipe.with_loss(cfg, "level_sum:multi_similarity")
    assert (ms.loss.name, ms.loss.baseline) == ("level_sum", "multi_similarity")
    assert (recipe.with_loss(ms, "fine_only").loss.name, recipe.with_loss(ms, "fine_only").loss.baseline) == (
        "fine_only", "multi_similarity")  # no kind given: the config's stays
    assert recipe.with_loss(cfg, "csl").loss.name == "csl"
    for bad in ("csl:cosface", "triplet", "triplet:cosface"):
        with pytest.raises(LowlabelError, match="model"):
            recipe.with_loss(cfg, bad)
