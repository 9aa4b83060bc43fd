"""Slug -> method: what each method is, where its recipe lives, and whether it is ready.

This module imports nothing heavy: `lowlabel list` and `lowlabel --help` read it without importing torch.
A method's modules (`lowlabel.methods.<slug>.recipe`, `.demo`, `.cli`) are imported only when used; the CLI mounts
each method's sub-command group under `Method.cli_name`.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from lowlabel.errors import LowlabelError


@dataclass(frozen=True)
class Method:
    slug: str
    title: str
    paper: str
    task: str
    ready: bool
    command: str = ""  # name of the method's own CLI sub-command group (default: the slug)
    aliases: tuple[str, ...] = ()  # other names `registry.get` and the CLI accept for it
    extras: tuple[str, ...] = ()  # optional extras (lowlabel.extras.EXTRAS) its demo and default training need

    @property
    def state(self) -> str:
        return "ready" if self.ready else "planned"

    @property
    def cli_name(self) -> str:
        return self.command or self.slug

    def _module(self, name: str) -> ModuleType:
        if not self.ready:
            raise LowlabelError(
                f"method '{self.slug}' is planned, not implemented yet; `lowlabel list` shows which are ready"
            )
        return importlib.import_module(f"lowlabel.methods.{self.slug}.{name}")

    def recipe(self) -> ModuleType:
        """The method's recipe module (`lowlabel.engine.recipe.RecipeModule`)."""
        return self._module("recipe")

    def demo(self) -> ModuleType:
        """The method's demo module (`lowlabel.engine.recipe.DemoModule`)."""
        return self._module("demo")


# `ready` turns True only when the method's issue is done (see README's methods table).
METHODS: dict[str, Method] = {
    m.slug: m
    for m in (
        Method("sdd_fiqa", "SDD-FIQA", "Ou et al., CVPR 2021", "face image quality", ready=True, command="fiqa",
               aliases=("fiqa", "sdd-fiqa")),
        Method("densecl", "DenseCL", "Wang et al., CVPR 2021", "dense self-supervised pretraining", ready=False),
        Method("fdrl", "FDRL", "Ruan et al., CVPR 2021", "facial expression recognition", ready=False,
               extras=("face",)),
        Method("soho", "SOHO", "Huang et al., CVPR 2021", "vision-language pretraining", ready=False,
               extras=("text",)),
        Method("grounding_ckd", "Contrastive KD grounding", "Wang et al., CVPR 2021", "weakly supervised grounding",
               ready=True, command="grounding", aliases=("grounding",), extras=("text",)),
        Method("dyml", "Dynamic metric learning", "Sun et al., CVPR 2021", "multi-scale metric learning", ready=False,
               extras=("metric",)),
        Method("completer", "COMPLETER", "Lin et al., CVPR 2021", "incomplete multi-view clustering", ready=True),
        Method("acr", "ACR", "Abuduweili et al., CVPR 2021", "semi-supervised transfer learning", ready=True),
        Method("sgp", "SGP", "Yang et al., CVPR 2021", "self-supervised geometric perception", ready=False,
               extras=("geometry",)),
        Method("dtc", "DTC", "Luo et al., AAAI 2021", "semi-supervised 3D segmentation", ready=True),
        Method("sg_retrieval", "IRSGS", "Yoon et al., AAAI 2021", "scene-graph image retrieval", ready=True,
               command="sgr", aliases=("sgr", "irsgs"), extras=("graph", "text")),
    )
}
_BY_NAME = {name: m for m in METHODS.values() for name in (m.slug, *m.aliases)}


def get(name: str) -> Method:
    """The method registered under `name` (slug or alias), or an error listing the known slugs."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise LowlabelError(f"unknown method '{name}'; known: {', '.join(METHODS)}") from None


def figures(slug: str, run_dir: Path) -> list[Path]:
    """The PNGs that show run folder `run_dir` of method `slug`, from its demo module's `figures` hook (planned
    methods included); none when the method has no demo module yet or the slug is unknown."""
    method = _BY_NAME.get(slug)
    if method is None or importlib.util.find_spec(f"lowlabel.methods.{method.slug}.demo") is None:
        return []
    return list(importlib.import_module(f"lowlabel.methods.{method.slug}.demo").figures(Path(run_dir)))


def ready() -> list[Method]:
    return [m for m in METHODS.values() if m.ready]
