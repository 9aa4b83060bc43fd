"""Export the query encoder's backbone of a DenseCL run in the key format of torchvision or detectron2."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from lowlabel.engine import checkpoint as ckpt
from lowlabel.errors import LowlabelError
from lowlabel.files import write_bytes

FORMATS = ("torchvision", "detectron2")
BACKBONE_PREFIX = "encoder_q.backbone."


def backbone_state(model_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The query backbone's tensors with torchvision ResNet names (lowlabel.nn keeps them): the official
    `extract_backbone_weights.py` step. Heads, key encoder and queues are dropped."""
    out = {k[len(BACKBONE_PREFIX) :]: v for k, v in model_state.items() if k.startswith(BACKBONE_PREFIX)}
    if not out:
        raise LowlabelError(f"no '{BACKBONE_PREFIX}*' tensors in the checkpoint: is it a DenseCL checkpoint?")
    return out


def detectron2_name(key: str) -> str:
    """torchvision ResNet key -> detectron2 key (as the official convert-pretrain-to-detectron2.py):
    stem prefixed, layerN -> res(N+1), bnK -> convK.norm, downsample.0/1 -> shortcut(.norm)."""
    if "layer" not in key:
        key = "stem." + key
    for t in (1, 2, 3, 4):
        key = key.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        key = key.replace(f"bn{t}", f"conv{t}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def to_detectron2(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision-format backbone for detectron2 (BN `num_batches_tracked` counters are dropped)."""
    return {detectron2_name(k): v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def checkpoint_file(run: Path) -> Path:
    """`run` itself when it is a file, else the newest checkpoint of the run folder `run`."""
    path = run if run.is_file() else ckpt.newest_checkpoint(run)
    if path is None:
        raise LowlabelError(f"{run}: no checkpoints/step_*.pt found; give a run folder of `lowlabel train densecl`")
    return path


def run_backbone(run: Path) -> dict[str, torch.Tensor]:
    """The query backbone's tensors (torchvision names) of `run`: a run folder (newest checkpoint) or a checkpoint."""
    state = ckpt.load(checkpoint_file(run))
    return backbone_state(state["model"] if isinstance(state, dict) and "model" in state else state)


def export_run(run: Path, fmt: str, out: Path) -> Path:
    """Write the backbone of `run` (a run folder: its newest checkpoint; or a checkpoint file) to `out`.

    `out` ending in .safetensors -> safetensors; .pkl (detectron2 only) -> detectron2's pickle
    {"model": numpy arrays, "__author__", "matching_heuristics": True}; anything else -> a torch file of tensors.
    """
    if fmt not in FORMATS:
        raise LowlabelError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    weights = run_backbone(run)
    if fmt == "detectron2":
        weights = to_detectron2(weights)
        if out.suffix == ".pkl":
            payload = {"model": {k: v.cpu().numpy() for k, v in weights.items()}, "__author__": "lowlabel-densecl",
                       "matching_heuristics": True}
            return write_bytes(out, pickle.dumps(payload))
    elif out.suffix == ".pkl":
        raise LowlabelError(f"{out}: .pkl is detectron2's format; use .pth or .safetensors for torchvision")
    return ckpt.export_weights(weights, out)
