"""Slug -> method: what each method is, where its recipe lives, and whether it is ready.

This module imports nothing heavy: `lowlabel list` and `lowlabel --help` read it without importing torch.
A method's recipe (`lowlabel.methods.<slug>.recipe`) is imported only when it is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from lowlabel.errors import LowlabelError


@dataclass(frozen=True)
class Method:
    slug: str
    title: str
    paper: str
    task: str
    ready: bool
    extras: tuple[str, ...] = ()  # optional extras (lowlabel.extras.EXTRAS) its demo and default training need

    @property
    def state(self) -> str:
        return "ready" if self.ready else "planned"

    def recipe(self) -> ModuleType:
        """The method's recipe module: `Config`, `train`, `evaluate`, `demo`."""
        if not self.ready:
            raise LowlabelError(
                f"method '{self.slug}' is planned, not implemented yet; `lowlabel list` shows which are ready"
            )
        return importlib.import_module(f"lowlabel.methods.{self.slug}.recipe")


# `ready` turns True only when the method's issue is done (see README's methods table).
METHODS: dict[str, Method] = {
    m.slug: m
    for m in (
        Method("sdd_fiqa", "SDD-FIQA", "Ou et al., CVPR 2021", "face image quality", ready=True),
        Method("densecl", "DenseCL", "Wang et al., CVPR 2021", "dense self-supervised pretraining", ready=False),
        Method("fdrl", "FDRL", "Ruan et al., CVPR 2021", "facial expression recognition", ready=False),
        Method("soho", "SOHO", "Huang et al., CVPR 2021", "vision-language pretraining", ready=False),
        Method("grounding_ckd", "Contrastive KD grounding", "Wang et al., CVPR 2021", "weakly supervised grounding",
               ready=False),
        Method("dyml", "Dynamic metric learning", "Sun et al., CVPR 2021", "multi-scale metric learning", ready=False),
        Method("completer", "COMPLETER", "Lin et al., CVPR 2021", "incomplete multi-view clustering", ready=True),
        Method("acr", "ACR", "Abuduweili et al., CVPR 2021", "semi-supervised transfer learning", ready=False),
        Method("sgp", "SGP", "Yang et al., CVPR 2021", "self-supervised geometric perception", ready=False),
        Method("dtc", "DTC", "Luo et al., AAAI 2021", "semi-supervised 3D segmentation", ready=True),
        Method("sg_retrieval", "IRSGS", "Yoon et al., AAAI 2021", "scene-graph image retrieval", ready=True,
               extras=("graph", "text")),
    )
}


def get(slug: str) -> Method:
    """The method registered under `slug`, or an error listing the known slugs."""
    try:
        return METHODS[slug]
    except KeyError:
        raise LowlabelError(f"unknown method '{slug}'; known: {', '.join(METHODS)}") from None


def ready() -> list[Method]:
    return [m for m in METHODS.values() if m.ready]
