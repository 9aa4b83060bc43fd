"""Data the FDRL tests write: class folders of rendered faces."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def write_class_folders(root: Path) -> Path:
    """train/<class>/ and test/<class>/ with 6 and 2 faces (8 identities) of three expressions."""
    from lowlabel.data.synth.faces import EXPRESSIONS, Nuisance, identity_params, render_face
    from lowlabel.data.synth.faces_degrade import Degradation

    for name in ("happy", "neutral", "surprise"):
        for n in range(8):
            folder = root / ("train" if n < 6 else "test") / name
            folder.mkdir(parents=True, exist_ok=True)
            image = render_face(identity_params(n), EXPRESSIONS.index(name), Nuisance(), Degradation(), 32)
            Image.fromarray(image).save(folder / f"{n}.png")
    return root
