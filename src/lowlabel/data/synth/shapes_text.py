"""Vocabulary, geometric relations, templated captions and the scene-similarity judge of the shapes world.

Everything here works on object attributes and visible-mask statistics; rendering lives in `shapes.py`.
See docs/data/shapes.md for the meaning of every field and threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from lowlabel.data.synth.shapes import Scene

SHAPES: tuple[str, ...] = ("circle", "ellipse", "heart", "square", "rectangle", "cross", "triangle", "star", "diamond")
FAMILIES: tuple[str, ...] = ("round", "angular", "pointy")
FAMILY_OF_SHAPE: tuple[int, ...] = (0, 0, 0, 1, 1, 1, 2, 2, 2)
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink")
SIZES: tuple[str, ...] = ("small", "medium", "large")
PREDICATES: tuple[str, ...] = ("left-of", "right-of", "above", "below", "bigger-than", "near")

# Words that may stand for each class in a caption (first = canonical name).
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "ellipse": ("ellipse", "oval"),
    "heart": ("heart",),
    "square": ("square",),
    "rectangle": ("rectangle", "bar"),
    "cross": ("cross",),
    "triangle": ("triangle",),
    "star": ("star",),
    "diamond": ("diamond", "rhombus"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big"),
}
PREDICATE_WORDS: dict[str, tuple[str, ...]] = {
    "left-of": ("left of", "to the left of", "on the left of"),
    "right-of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath", "lower than"),
    "bigger-than": ("bigger than", "larger than"),
    "near": ("near", "next to", "close to"),
}

# Relation thresholds, as fractions of the image side S (see `relations`).
AXIS_MARGIN = 0.1
NEAR_DISTANCE = 0.3
BIGGER_RATIO = 1.3

_COUNT_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight")


@dataclass(frozen=True)
class Phrase:
    """A noun phrase naming object `obj`; it is `captions[caption][start:start + len(text)]`."""

    text: str
    obj: int
    caption: int
    start: int


def relations(centroids: np.ndarray, areas: np.ndarray, size: int) -> list[tuple[int, str, int]]:
    """All (subject, predicate, object) triples that hold between visible masks, for ordered pairs s != o.

    centroids: (n, 2) mean (x, y) of each object's visible pixels; areas: (n,) visible pixel counts; size: image side S.
    left-of: x_o - x_s > AXIS_MARGIN*S; right-of: x_s - x_o > AXIS_MARGIN*S; above: y_o - y_s > AXIS_MARGIN*S (y grows
    downwards); below: y_s - y_o > AXIS_MARGIN*S; bigger-than: area_s > BIGGER_RATIO*area_o;
    near: ||c_s - c_o|| < NEAR_DISTANCE*S. Triples are ordered by predicate (PREDICATES order), subject, object.
    """
    c = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
    a = np.asarray(areas, dtype=np.float64)
    dx = c[None, :, 0] - c[:, None, 0]  # dx[s, o] = x_o - x_s
    dy = c[None, :, 1] - c[:, None, 1]
    margin = AXIS_MARGIN * size
    off_diag = ~np.eye(len(a), dtype=bool)
    holds = np.stack(
        [
            dx > margin,  # left-of
            -dx > margin,  # right-of
            dy > margin,  # above
            -dy > margin,  # below
            a[:, None] > BIGGER_RATIO * a[None, :],  # bigger-than
            (np.hypot(dx, dy) < NEAR_DISTANCE * size) & off_diag,  # near
        ]
    )
    p_idx, s_idx, o_idx = np.nonzero(holds)
    return [(s, PREDICATES[p], o) for p, s, o in zip(p_idx.tolist(), s_idx.tolist(), o_idx.tolist(), strict=True)]


class _Uniforms:
    """U(0, 1) numbers from `rng`, fetched 64 at a time (one rng call per word choice would dominate the cost)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.buf = rng, []

    def __call__(self) -> float:
        if not self.buf:
            self.buf = self.rng.random(64).tolist()
        return self.buf.pop()

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self() * len(options))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(attrs: tuple[int, int, int], rng: _Uniforms, with_size: bool) -> str:
    """'a small red triangle' / 'the red disc': optional size word, colour, shape synonym."""
    shape, colour, size = attrs
    words = [COLOURS[colour], rng.pick(SHAPE_WORDS[SHAPES[shape]])]
    if with_size:
        words.insert(0, rng.pick(SIZE_WORDS[SIZES[size]]))
    det = "the" if rng() < 0.3 else _article(words[0])
    return " ".join([det, *words])


def _list_caption(attrs: list[tuple[int, int, int]], domain: str, rng: _Uniforms) -> list[tuple[str, int]]:
    """Segments of a caption that enumerates every object in random order; -1 marks glue text."""
    n = len(attrs)
    order = sorted(range(n), key=lambda _: rng())
    nps = [(_noun_phrase(attrs[k], rng, rng() < 0.7), int(k)) for k in order]
    segs: list[tuple[str, int]] = []
    for j, seg in enumerate(nps):
        if j:
            segs.append((" and " if j == n - 1 else ", ", -1))
        segs.append(seg)
    template = int(rng() * 6)
    noun = rng.pick(("shape", "object")) + ("s" if n > 1 else "")
    prefix, suffix = [
        ("", ""),
        ("there is " if n == 1 else "there are ", ""),
        (f"{_COUNT_WORDS[n - 1]} {noun}: ", ""),
        ("a picture of ", ""),
        ("", f" on a {'plain' if domain == 'source' else 'textured'} background"),
        ("an image showing ", ""),
    ][template]
    return [(prefix, -1), *segs, (suffix, -1)]


def _relation_caption(
    attrs: list[tuple[int, int, int]], triples: list[tuple[int, str, int]], rng: _Uniforms
) -> list[tuple[str, int]]:
    """Segments of a caption stating one or two relations of the scene graph, with paraphrased predicates."""
    first = int(rng() * len(triples))
    second = int(rng() * (len(triples) - 1))  # a second, different triple when there is one
    picks = [first] if len(triples) == 1 else [first, second + (second >= first)]
    segs: list[tuple[str, int]] = []
    for j, t in enumerate(picks):
        s, pred, o = triples[t]
        sized = pred != "bigger-than" and rng() < 0.5  # size words would compete with the area relation
        lead, mid = [("", " "), ("", " is "), ("there is ", " ")][int(rng() * 3)]
        if j:
            segs.append((rng.pick((" and ", ", and ", "; ")), -1))
        segs += [(lead, -1), (_noun_phrase(attrs[s], rng, sized), s)]
        segs += [(mid + rng.pick(PREDICATE_WORDS[pred]) + " ", -1), (_noun_phrase(attrs[o], rng, sized), o)]
    return segs


def make_captions(
    attrs: list[tuple[int, int, int]],
    triples: list[tuple[int, str, int]],
    domain: str,
    n_captions: int,
    rng: np.random.Generator,
) -> tuple[list[str], list[Phrase]]:
    """Templated captions and the phrases inside them that name objects.

    attrs: (shape, colour, size) per object; triples: the scene graph's relations. Caption 0 lists every object;
    the others state relations when there are any, else list the objects again with other templates and synonyms.
    """
    draw = _Uniforms(rng)
    captions: list[str] = []
    phrases: list[Phrase] = []
    for c in range(n_captions):
        relational = c > 0 and bool(triples)
        segs = _relation_caption(attrs, triples, draw) if relational else _list_caption(attrs, domain, draw)
        text = ""
        for seg, obj in segs:
            if obj >= 0:
                phrases.append(Phrase(seg, obj, c, len(text)))
            text += seg
        captions.append(text)
    return captions, phrases


def _key_sets(scene: Scene) -> tuple[set, set, set]:
    """(shape, colour), (shape, colour, size) and (subject (shape, colour), predicate, object (shape, colour)) sets."""
    sc = [(o.shape, o.colour) for o in scene.objects]
    scs = {(o.shape, o.colour, o.size) for o in scene.objects}
    rel = {(sc[s], p, sc[o]) for s, p, o in scene.relations}
    return set(sc), scs, rel


def scene_similarity(a: Scene, b: Scene) -> float:
    """Ground-truth similarity of two scenes: mean Jaccard index of their key sets (see `_key_sets`).

    Jaccard(A, B) = |A & B| / |A | B|. A component whose two sets are both empty (e.g. the relation sets of two
    one-object scenes) carries no evidence and is left out: the mean runs over the components with a non-empty union,
    and two scenes whose sets are all empty score 1. In [0, 1], symmetric, 1 for equal graphs.
    """
    scores = [len(x & y) / len(x | y) for x, y in zip(_key_sets(a), _key_sets(b), strict=True) if x or y]
    return sum(scores) / len(scores) if scores else 1.0


def _multi_hot(scenes: Sequence[Scene]) -> list[sparse.csr_matrix]:
    """Sparse 0/1 matrices (N, 72), (N, 216), (N, 72*6*72) encoding the three key sets of each scene."""
    nc, ns, npred = len(COLOURS), len(SIZES), len(PREDICATES)
    n_sc = len(SHAPES) * nc
    pred_id = {p: k for k, p in enumerate(PREDICATES)}
    cols: list[list[np.ndarray]] = [[], [], []]
    for scene in scenes:
        sc = np.array([o.shape * nc + o.colour for o in scene.objects], dtype=np.int64)
        size = np.array([o.size for o in scene.objects], dtype=np.int64)
        trip = np.array([(s, pred_id[p], o) for s, p, o in scene.relations], dtype=np.int64).reshape(-1, 3)
        cols[0].append(np.unique(sc))
        cols[1].append(np.unique(sc * ns + size))
        cols[2].append(np.unique((sc[trip[:, 0]] * npred + trip[:, 1]) * n_sc + sc[trip[:, 2]]))
    mats = []
    for parts, width in zip(cols, (n_sc, n_sc * ns, n_sc * npred * n_sc), strict=True):
        indptr = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
        indices = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        mats.append(sparse.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(parts), width)))
    return mats


def scene_similarity_matrix(a: Sequence[Scene], b: Sequence[Scene] | None = None) -> np.ndarray:
    """All-pairs `scene_similarity`: (len(a), len(b)) float64 matrix (b defaults to a).

    Key sets become sparse multi-hot rows X, Y; |A & B| = X Y^T and |A | B| = |A| + |B| - |A & B|, so each Jaccard
    index is one sparse matrix product. As in the pairwise version, a component with an empty union is left out of
    the mean, and pairs with every union empty score 1.
    """
    xs = _multi_hot(a)
    ys = xs if b is None else _multi_hot(b)
    total = np.zeros((xs[0].shape[0], ys[0].shape[0]))
    counted = np.zeros_like(total)
    for x, y in zip(xs, ys, strict=True):
        inter = (x @ y.T).toarray()
        union = np.asarray(x.sum(1)) + np.asarray(y.sum(1)).T - inter
        total += inter / np.maximum(union, 1)  # inter = 0 where union = 0
        counted += union > 0
    return np.where(counted > 0, total / np.maximum(counted, 1), 1.0)
