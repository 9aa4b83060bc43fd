"""Face embedding extractors behind one interface, and an embedding cache.

An extractor maps a list of uint8 RGB images (H, W, 3) to an (N, D) float32 array. Three kinds:
- `BuiltinExtractor`: the small recogniser trained on the faces world (`recipe.train_recognizer`);
- `DlibExtractor`: dlib's ResNet face recogniser (128-d) with its 5-point landmark alignment, from the optional
  `[face]` extra (`dlib-bin`, `face-recognition-models`), imported only when used. The images are taken to be face
  crops: the landmarks are searched in the whole image (no face detector), as for aligned datasets like CASIA/MS1M;
- `TorchScriptExtractor`: any TorchScript module taking (B, 3, S, S) in [-1, 1] (the official `extract_feats.py`
  preprocessing: Resize(S) + Normalize(0.5, 0.5)) and returning (B, D).
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from lowlabel.data.io import read_image
from lowlabel.engine import batches
from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.files import atomic_path


class Extractor(Protocol):
    """What the labelling pipeline needs from a face recogniser."""

    name: str

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 RGB images (H, W, 3) -> (N, D) float32 embeddings."""
        ...


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


class DlibExtractor:
    """dlib ResNet face descriptor (128-d) after 5-point alignment; needs `pip install lowlabel[face]`."""

    name = "dlib_resnet_v1"

    def __init__(self) -> None:
        dlib = require("dlib", "face", "the dlib recogniser")
        frm = require("face_recognition_models", "face", "the dlib recogniser")
        self._dlib = dlib
        self._landmarks = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(images), 128), np.float32)
        for i, img in enumerate(images):  # dlib's API is per image; this is not a torch hot path
            img = np.ascontiguousarray(img)
            box = self._dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
            shape = self._landmarks(img, box)
            out[i] = np.asarray(self._net.compute_face_descriptor(img, shape), np.float32)
        return out


def make_extractor(spec: str, *, builtin: torch.nn.Module | None = None, size: int = 112,
                   device: torch.device | None = None) -> Extractor:
    """'dlib', 'builtin' (needs the `builtin` embedder) or a TorchScript file path."""
    device = device or torch.device("cpu")
    if spec == "dlib":
        return DlibExtractor()
    if spec == "builtin":
        if builtin is None:
            raise LowlabelError("'builtin' is the faces-world recogniser of the Python API; for your data train it "
                                "with `lowlabel fiqa recognizer DATA_DIR --out recognizer.pt` and pass "
                                "--recognizer recognizer.pt")
        return BuiltinExtractor(builtin, size=size, device=device)
    return TorchScriptExtractor(spec, size=size, device=device)


def cache_key(extractor: Extractor, paths: Sequence[Path]) -> str:
    """sha1 of the extractor name and each file's path, size and modification time."""
    h = hashlib.sha1(extractor.name.encode())
    for p in paths:
        st = Path(p).stat()
        h.update(f"\n{Path(p).resolve()}\t{st.st_size}\t{st.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def embed_files(extractor: Extractor, paths: Sequence[Path], *, cache_dir: Path | None = None,
                batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, D) float32 of image files, read with `read_image` (errors name the file), cached as
    `cache_dir/embeddings-<key>.npz` keyed by the file list (see `cache_key`)."""
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"embeddings-{cache_key(extractor, paths)}.npz"
        if cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as stored:
                    return stored["embeddings"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # a damaged entry is recomputed
                pass
    parts = []
    progress = None
    if sys.stdout.isatty():
        from rich.progress import Progress

        progress = Progress()
        progress.start()
        task = progress.add_task("embedding", total=len(paths))
    try:
        for b in range(0, len(paths), batch_size):
            parts.append(extractor.embed([read_image(p) for p in paths[b : b + batch_size]]))
            if progress is not None:
                progress.update(task, advance=len(parts[-1]))
    finally:
        if progress is not None:
            progress.stop()
    emb = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)
    if cache is not None:
        with atomic_path(cache) as tmp:
            np.savez(tmp, embeddings=emb)
    return emb


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
