"""SOHO on the shapes world: captioned scenes for pre-training and retrieval, templated questions for QA.

Scene i of split `train` is `generate_scene(default_rng([seed, i]))`, of split `test` scene n_train + i, so the splits
never share a scene. Questions (four templates, one answer word each):
  colour    "what colour is the <shape>?"            -> a colour word (asked only of a shape that occurs once)
  shape     "what shape is the <colour> object?"     -> a shape word (asked only of a colour that occurs once)
  count     "how many shapes are there?"             -> one | two | three | ...
  relation  "is the <c s> <predicate> the <c s>?"    -> yes | no (a true relation of the scene graph or the same
            pair with the predicate that does not hold, each with probability 1/2)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from lowlabel.data.synth.shapes import COLOURS, SHAPES, Scene, ShapesConfig, generate_scene

COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
_PREDICATES = {"left-of": ("left of", "right-of"), "right-of": ("right of", "left-of"), "above": ("above", "below"),
               "below": ("below", "above")}
ANSWERS = (*COLOURS, *SHAPES, *COUNT_WORDS[1:], "yes", "no")
QUESTION_KINDS = ("colour", "shape", "count", "relation")


@dataclass
class WorldSplit:
    """Scenes of one split as tensors: images (N, 3, S, S) uint8, captions per scene, the scenes themselves."""

    images: torch.Tensor
    captions: list[list[str]]
    scenes: list[Scene]


def world_config(size: int, max_objects: int, n_captions: int) -> ShapesConfig:
    return ShapesConfig(size=size, min_objects=1, max_objects=max_objects, n_captions=n_captions)


def world_split(seed: int, start: int, n: int, cfg: ShapesConfig) -> WorldSplit:
    """Scenes start .. start + n - 1 of the world with `seed`."""
    scenes = [generate_scene(np.random.default_rng([seed, start + i]), cfg) for i in range(n)]
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).contiguous()
    return WorldSplit(images, [list(s.captions) for s in scenes], scenes)


def scene_questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """One question of each kind that the scene allows: (kind, question, answer)."""
    objs = scene.objects
    out = []
    shapes = Counter(o.shape for o in objs)
    colours = Counter(o.colour for o in objs)
    unique_shape = [o for o in objs if shapes[o.shape] == 1]
    if unique_shape:
        o = unique_shape[int(rng.integers(len(unique_shape)))]
        out.append(("colour", f"what colour is the {SHAPES[o.shape]}?", COLOURS[o.colour]))
    unique_colour = [o for o in objs if colours[o.colour] == 1]
    if unique_colour:
        o = unique_colour[int(rng.integers(len(unique_colour)))]
        out.append(("shape", f"what shape is the {COLOURS[o.colour]} object?", SHAPES[o.shape]))
    out.append(("count", "how many shapes are there?", COUNT_WORDS[len(objs)]))
    spatial = [(s, p, o) for s, p, o in scene.relations if p in _PREDICATES]
    if spatial:
        s, p, o = spatial[int(rng.integers(len(spatial)))]
        word, opposite = _PREDICATES[p]
        truth = bool(rng.random() < 0.5)
        if not truth:
            word = _PREDICATES[opposite][0]
        a, b = objs[s], objs[o]
        out.append(("relation", f"is the {COLOURS[a.colour]} {SHAPES[a.shape]} {word} the {COLOURS[b.colour]} "
                                f"{SHAPES[b.shape]}?", "yes" if truth else "no"))
    return out


@dataclass
class QASet:
    """Questions over the images of a WorldSplit: image (Q,) index, text, kind and answer index into ANSWERS."""

    image: torch.Tensor
    questions: list[str]
    kinds: list[str]
    answers: torch.Tensor


def world_questions(split: WorldSplit, seed: int) -> QASet:
    """Every allowed question of every scene (drawn with a generator seeded by `seed`)."""
    rng = np.random.default_rng(seed)
    image, texts, kinds, answers = [], [], [], []
    for i, scene in enumerate(split.scenes):
        for kind, question, answer in scene_questions(scene, rng):
            image.append(i)
            texts.append(question)
            kinds.append(kind)
            answers.append(ANSWERS.index(answer))
    return QASet(torch.tensor(image), texts, kinds, torch.tensor(answers))
