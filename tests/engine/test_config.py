from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lowlabel.engine.config import config_keys, load_config, save_config
from lowlabel.engine.recipe import TrainConfig
from lowlabel.errors import LowlabelError


@dataclass
class Model:
    width: int = 16
    name: str = "tiny"


@dataclass
class Cfg:
    lr: float = 0.1
    model: Model = field(default_factory=Model)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=7))


def test_defaults_file_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.5\nmodel:\n  width: 32\n")
    cfg = load_config(Cfg, path, ["model.width=64", "train.max_steps=3"])
    assert isinstance(cfg, Cfg) and isinstance(cfg.model, Model)
    assert (cfg.lr, cfg.model.width, cfg.model.name, cfg.train.max_steps) == (0.5, 64, "tiny", 3)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(LowlabelError, match=r"unknown config key 'model\.depth'.*model\.width"):
        load_config(Cfg, None, ["model.depth=3"])


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lrr: 0.5\n")
    with pytest.raises(LowlabelError, match="unknown config key 'lrr'"):
        load_config(Cfg, path)


def test_bad_type_names_the_key():
    with pytest.raises(LowlabelError, match=r"model\.width"):
        load_config(Cfg, None, ["model.width=abc"])


def test_override_without_equals_and_missing_file(tmp_path):
    with pytest.raises(LowlabelError, match="key=value"):
        load_config(Cfg, None, ["lr"])
    with pytest.raises(LowlabelError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.yaml")


def test_keys_and_saved_config_round_trip(tmp_path):
    keys = config_keys(Cfg)
    assert "lr" in keys and "model.width" in keys and "train.max_steps" in keys
    cfg = load_config(Cfg, None, ["lr=0.25"])
    again = load_config(Cfg, save_config(cfg, tmp_path / "config.yaml"))
    assert again == cfg
