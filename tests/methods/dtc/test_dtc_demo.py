"""DTC demo wiring: the budget rule picked on the tuning world, and the compared models differing only in the loss."""

from __future__ import annotations

import dataclasses

from lowlabel.methods.dtc import demo


def test_budget_rule_waits_for_every_model_to_catch_up() -> None:
    # DTC is best at 300; the baseline keeps improving to 600 but is within 0.01 of its best at 300
    assert demo.choose_budget({150: {"dtc": 0.80, "base": 0.70}, 300: {"dtc": 0.805, "base": 0.75},
                               600: {"dtc": 0.79, "base": 0.755}}) == 300
    # the baseline only catches up at the longest budget: that budget, though DTC is best at the shortest
    assert demo.choose_budget({150: {"dtc": 0.90, "base": 0.60}, 300: {"dtc": 0.85, "base": 0.70},
                               600: {"dtc": 0.89, "base": 0.90}}) == 600
    assert demo.choose_budget({150: {"dtc": 0.5, "base": 0.5}, 600: {"dtc": 0.5, "base": 0.5}}) == 150


def test_models_differ_only_in_the_loss_and_the_unlabelled_half() -> None:
    cfg = demo.demo_config(False, seed=7, steps=42)
    models = demo.variants(cfg)
    assert list(models) == [demo.METHOD, demo.BASELINE]
    base = models[demo.BASELINE]
    assert (base.unlabelled_bs, base.consistency, base.beta) == (0, 0.0, 0.3)  # DTC's supervised loss: Dice + 0.3 LSF
    assert dataclasses.replace(base, unlabelled_bs=2, consistency=1.0) == models[demo.METHOD]
    assert cfg.train.max_steps == 42 and cfg.train.seed == 7 and cfg.synthetic.seed == 7
    assert demo.demo_config(True, seed=3).train.max_steps == demo.STEPS
    assert not set(demo.TUNING_SEEDS) & set(demo.EVAL_SEEDS + demo.QUICK_SEEDS)


def test_threshold_floor_finds_a_separating_level_of_either_polarity() -> None:
    from types import SimpleNamespace

    import numpy as np

    rng = np.random.default_rng(0)

    def case(bright: bool) -> SimpleNamespace:
        label = np.zeros((12, 12, 8), np.uint8)
        label[3:9, 4:10, 2:6] = 1
        image = rng.uniform(0.0, 0.4, label.shape) + (0.6 if bright else -0.6) * label
        return SimpleNamespace(image=image.astype(np.float32), label=label)

    for bright in (True, False):
        scores = demo.threshold_scores([case(bright), case(bright)], [case(bright)])
        assert scores["dice"] > 0.95  # the percentile grid is 1% wide: a few voxels either side
    noisy = case(True)
    noisy.image = rng.uniform(0.0, 1.0, noisy.label.shape).astype(np.float32)  # intensity says nothing
    assert demo.threshold_scores([case(True)], [noisy])["dice"] < 0.5
