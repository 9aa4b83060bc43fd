from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from lowlabel.engine import checkpoint as ckpt
from lowlabel.errors import LowlabelError


class Boom:
    """Unpickling this would run code: weights-only loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_atomic_save_then_load(tmp_path):
    path = ckpt.atomic_save({"w": torch.arange(3.0), "step": 4}, tmp_path / "a.pt")
    assert ckpt.load(path)["step"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Boom()}, path)
    with pytest.raises(LowlabelError, match="refuses code"):
        ckpt.load(path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = ckpt.atomic_save({"w": torch.randn(1000)}, tmp_path / "t.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LowlabelError, match="truncated or corrupt"):
        ckpt.load(path)
    with pytest.raises(LowlabelError, match="does not exist"):
        ckpt.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("content", [b"", b"K", b"U\x00", b"\x80\x02", b"h\x00"])  # each fails differently in torch
def test_a_file_of_a_few_bytes_is_a_clear_error(tmp_path, content):
    path = tmp_path / "tiny.pt"
    path.write_bytes(content)
    with pytest.raises(LowlabelError, match=r"tiny\.pt is truncated or corrupt"):
        ckpt.load(path)


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    import random

    state = ckpt.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    path = ckpt.atomic_save({"rng": state}, tmp_path / "r.pt")
    ckpt.set_rng_state(ckpt.load(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_newest_and_prune(tmp_path):
    for step in (5, 20, 10):
        ckpt.atomic_save({"step": step}, ckpt.checkpoint_path(tmp_path, step))
    assert ckpt.newest_checkpoint(tmp_path).name == "step_00000020.pt"
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000010.pt", "step_00000020.pt"]
    assert ckpt.newest_checkpoint(tmp_path / "none") is None


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_export_weights_round_trip(tmp_path, suffix):
    state = {"conv1.weight": torch.randn(4, 3, 3, 3), "bn1.running_mean": torch.zeros(4)}
    loaded = ckpt.load_weights(ckpt.export_weights(state, tmp_path / f"w{suffix}"))
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_plain_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "p.pt"
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(LowlabelError):
        ckpt.load(path)


def test_load_into_reads_training_checkpoints_and_bare_state_dicts(tmp_path):
    from torch import nn

    from lowlabel.engine.checkpoint import atomic_save, load_into

    source = nn.Linear(3, 2)
    atomic_save({"model": source.state_dict(), "step": 5}, tmp_path / "run.pt")
    atomic_save(source.state_dict(), tmp_path / "bare.pt")
    for name in ("run.pt", "bare.pt"):
        target = load_into(nn.Linear(3, 2), tmp_path / name)
        assert torch.equal(target.weight, source.weight) and torch.equal(target.bias, source.bias)
    with pytest.raises(LowlabelError, match=r"does not fit this model/config .*size mismatch"):
        load_into(nn.Linear(4, 2), tmp_path / "bare.pt")
    atomic_save([1, 2], tmp_path / "list.pt")
    with pytest.raises(LowlabelError, match="holds no state dict"):
        load_into(nn.Linear(3, 2), tmp_path / "list.pt")


def test_a_failed_torch_save_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    def failing(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half")  # part of the archive reached the disk
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(LowlabelError, match=r"could not write .*step_00000001\.pt.*file write failed"):
        ckpt.atomic_save({"w": torch.ones(2)}, tmp_path / "step_00000001.pt")
    assert list(tmp_path.iterdir()) == []
