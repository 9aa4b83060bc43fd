"""Checkpoints: atomic writes, weights-only loading, newest-checkpoint lookup, safetensors export of backbones."""

from __future__ import annotations

import pickle
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowlabel.errors import LowlabelError
from lowlabel.files import atomic_path

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temporary file beside `path`, then rename: a kill never leaves a half-written file."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as err:  # torch reports a failed write (a full disk) as RuntimeError, not OSError
            raise LowlabelError(f"could not write {path}: {str(err).splitlines()[-1] if str(err) else err}") from err
    return Path(path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with `weights_only=True` (no code runs).

    A missing, truncated or foreign file is a clear error rather than a crash deep in torch.
    """
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise LowlabelError(
            f"checkpoint {path} holds objects other than tensors and plain values, so it was not loaded "
            f"(weights-only loading refuses code): {str(err).splitlines()[0]}"
        ) from None
    except Exception as err:
        # garbage bytes fail anywhere in torch's unpickler (KeyError, IndexError, struct.error, RuntimeError, ...):
        # whatever the type, the file is not a checkpoint lowlabel wrote
        raise LowlabelError(
            f"checkpoint {path} is truncated or corrupt ({(str(err).splitlines() or [type(err).__name__])[0]}); "
            "delete it and resume from an earlier checkpoint"
        ) from None


def load_into(model: torch.nn.Module, path: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """`model` with the weights of `path`: a training checkpoint ({"model": state, ...}) or a bare state dict.

    A file whose keys or shapes do not fit the model is a clear error naming the file and the first mismatches.
    """
    state = load(path, map_location=map_location)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise LowlabelError(f"checkpoint {path} holds no state dict (found {type(state).__name__})")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise LowlabelError(
            f"checkpoint {path} does not fit this model/config ({' '.join(str(err).split())[:300]}); evaluate it "
            "with the config of the run that wrote it (its config.yaml)"
        ) from None
    return model


def rng_state() -> dict[str, Any]:
    """Every RNG state this process uses, as weights-only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached": cached},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run folder, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)


def export_weights(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write tensors as safetensors (`.safetensors`) or a weights-only torch file (anything else), atomically."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
        return path
    return atomic_save(tensors, path)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors written by `export_weights` (safetensors or torch file)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise LowlabelError(f"weights file {path} does not exist")
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise LowlabelError(f"weights file {path} is not a valid safetensors file: {err}") from None
    state = load(path)
    if not isinstance(state, dict):
        raise LowlabelError(f"weights file {path} does not hold a dict of tensors")
    return state
