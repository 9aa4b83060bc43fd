"""The face recognisers SDD-FIQA labels with, behind `lowlabel.data.face_embedding.Extractor` (uint8 RGB images
(H, W, 3) -> (N, D) float32; `face_embedding.embed_files` embeds files with a cache). Three kinds (`make_extractor`):
- `BuiltinExtractor`: the small recogniser trained on the faces world (`recipe.train_recognizer`);
- `face_embedding.DlibEmbedder`: dlib's ResNet face recogniser (128-d) on face crops, from the `[face]` extra;
- `TorchScriptExtractor`: any TorchScript module taking (B, 3, S, S) in [-1, 1] (the official `extract_feats.py`
  preprocessing: Resize(S) + Normalize(0.5, 0.5)) and returning (B, D).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lowlabel.data.face_embedding import DlibEmbedder, Extractor
from lowlabel.engine import batches
from lowlabel.errors import LowlabelError
from lowlabel.files import atomic_path


def to_model_input(images: Sequence[np.ndarray], size: int, device: torch.device) -> torch.Tensor:
    """uint8 (H, W, 3) images -> (B, 3, size, size) float in [-1, 1] (bilinear resize, official Normalize(0.5))."""
    batch = []
    for img in images:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)[None]
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        batch.append(x)
    return torch.cat(batch).to(device).sub_(0.5).div_(0.5)


class ModuleExtractor:
    """Embeddings from a torch module in eval mode, in batches, on the module's device."""

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor], *, size: int, name: str,
                 device: torch.device, batch_size: int = 256) -> None:
        self.module, self.size, self.name, self.device, self.batch_size = module, size, name, device, batch_size

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, 0), np.float32)
        x = to_model_input(images, self.size, torch.device("cpu"))
        return batches.embed(self.module, x, batch_size=self.batch_size, device=self.device).float().cpu().numpy()


def BuiltinExtractor(embedder: torch.nn.Module, *, size: int, device: torch.device) -> ModuleExtractor:  # noqa: N802
    """The built-in recogniser's embedder (eval mode) as an extractor."""
    return ModuleExtractor(embedder.eval().to(device), size=size, name=f"builtin{size}", device=device)


def TorchScriptExtractor(path: str | Path, *, size: int = 112, device: torch.device | None = None) -> ModuleExtractor:  # noqa: N802
    """A user's TorchScript recogniser from `path` (loaded with torch.jit.load, no pickled code)."""
    path = Path(path)
    device = device or torch.device("cpu")
    if not path.is_file():
        raise LowlabelError(f"recogniser file {path} does not exist; give a TorchScript .pt file, 'builtin' or 'dlib'")
    try:
        module = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError) as err:
        raise LowlabelError(f"{path} is not a TorchScript module ({str(err).splitlines()[0]}); export it with "
                            "torch.jit.script or torch.jit.trace") from None
    return ModuleExtractor(module, size=size, name=f"torchscript:{path.resolve()}", device=device)


def make_extractor(spec: str, *, builtin: torch.nn.Module | None = None, size: int = 112,
                   device: torch.device | None = None) -> Extractor:
    """'dlib', 'builtin' (needs the `builtin` embedder) or a TorchScript file path."""
    device = device or torch.device("cpu")
    if spec == "dlib":
        return DlibEmbedder()
    if spec == "builtin":
        if builtin is None:
            raise LowlabelError("'builtin' is the faces-world recogniser of the Python API; for your data train it "
                                "with `lowlabel fiqa recognizer DATA_DIR --out recognizer.pt` and pass "
                                "--recognizer recognizer.pt")
        return BuiltinExtractor(builtin, size=size, device=device)
    return TorchScriptExtractor(spec, size=size, device=device)


def save_recognizer(embedder: torch.nn.Module, path: str | Path) -> Path:
    """Save a recogniser as TorchScript (CPU, eval mode), atomically: `TorchScriptExtractor` embeds with it and
    `recognizer_state` gives its weights to start a regressor trunk."""
    scripted = torch.jit.script(embedder.cpu().eval())
    with atomic_path(path) as tmp:
        scripted.save(str(tmp))
    return Path(path)


def recognizer_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a recogniser file: TorchScript (`save_recognizer`, `torch.jit.save`) or a weights-only
    state dict / training checkpoint."""
    from lowlabel.engine.checkpoint import load

    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"recogniser file {path} does not exist; make one with `lowlabel fiqa recognizer`")
    try:
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except (RuntimeError, ValueError):  # not TorchScript: a plain weights file
        state = load(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LowlabelError(f"{path}: neither TorchScript nor a state dict of tensors")
    return state
