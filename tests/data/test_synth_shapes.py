"""Ground truth of the shapes world, checked against independent recomputation from the masks."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lowlabel.data.synth import shapes as sh
from lowlabel.data.synth import shapes_text as st
from lowlabel.data.synth.shapes import (
    Scene,
    ShapesConfig,
    ShapesDataset,
    generate_scene,
    preview,
    scene_similarity,
    scene_similarity_matrix,
)
from lowlabel.errors import LowlabelError

CONFIGS = [
    ShapesConfig(),
    ShapesConfig(size=50, domain="target", min_objects=3),
    ShapesConfig(size=160, min_objects=4, n_captions=5),
]


def _scenes(cfg: ShapesConfig, n: int = 30, seed: int = 3) -> list[Scene]:
    return [generate_scene(np.random.default_rng([seed, i]), cfg) for i in range(n)]


@pytest.fixture(scope="module", params=range(len(CONFIGS)), ids=["default", "s50-target", "s160-crowded"])
def scenes(request: pytest.FixtureRequest) -> tuple[ShapesConfig, list[Scene]]:
    cfg = CONFIGS[request.param]
    return cfg, _scenes(cfg)


def test_image_and_object_counts(scenes: tuple[ShapesConfig, list[Scene]]) -> None:
    cfg, items = scenes
    for s in items:
        assert s.image.shape == (cfg.size, cfg.size, 3) and s.image.dtype == np.uint8
        assert cfg.min_objects <= len(s.objects) <= cfg.max_objects
        assert len({(o.shape, o.colour) for o in s.objects}) == len(s.objects)


def test_boxes_are_tight_bounds_of_visible_masks(scenes: tuple[ShapesConfig, list[Scene]]) -> None:
    for s in scenes[1]:
        for mask, box in zip(s.instance_masks, s.boxes, strict=True):
            ys, xs = np.nonzero(mask)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_masks_disjoint_and_cover_semantic(scenes: tuple[ShapesConfig, list[Scene]]) -> None:
    cfg, items = scenes
    for s in items:
        assert s.instance_masks.sum(0).max() <= 1
        np.testing.assert_array_equal(s.instance_masks.any(0), s.semantic > 0)
        for j, (o, mask) in enumerate(zip(s.objects, s.instance_masks, strict=True)):
            assert (s.semantic[mask] == o.shape + 1).all()
            assert (s.instance_map[mask] == j + 1).all()
            assert mask.sum() == s.areas[j] >= max(cfg.min_visible_pixels, cfg.min_visible_fraction * o.area)


def test_circles_are_discs_occluded_only_by_later_objects() -> None:
    """Every pixel of a circle's disc is its own or belongs to an object drawn after it (painter's order)."""
    checked = 0
    for s in _scenes(ShapesConfig(size=96), n=40):
        yy, xx = np.mgrid[: s.image.shape[0], : s.image.shape[1]]
        for j, o in enumerate(s.objects):
            if st.SHAPES[o.shape] != "circle":
                continue
            d2 = (xx - o.centre[0]) ** 2 + (yy - o.centre[1]) ** 2
            disc = d2 <= o.radius**2 - 1e-6
            assert not (s.instance_masks[j] & (d2 > o.radius**2 + 1e-6)).any()
            assert (s.instance_map[disc] >= j + 1).all()
            checked += 1
    assert checked > 5


def _shoelace(v: np.ndarray) -> float:
    return 0.5 * abs(float(np.dot(v[:, 0], np.roll(v[:, 1], -1)) - np.dot(v[:, 1], np.roll(v[:, 0], -1))))


def test_shape_implicit_functions() -> None:
    """Polygons agree with matplotlib's point-in-polygon; areas match closed forms; each shape reaches radius ~1."""
    from matplotlib.path import Path as MplPath

    pts = np.random.default_rng(0).uniform(-1.05, 1.05, size=(200_000, 2))
    u, v = pts[:, 0], pts[:, 1]
    areas = {"circle": np.pi, "ellipse": np.pi * 0.55}
    for name, verts in sh._POLYGONS.items():
        np.testing.assert_array_equal(sh._INSIDE[name](u, v), MplPath(verts).contains_points(pts), err_msg=name)
        areas[name] = _shoelace(verts)
    for name in st.SHAPES:
        inside = sh._INSIDE[name](u, v)
        assert 0.95 < np.hypot(u, v)[inside].max() <= 1.0, name
        if name in areas:
            assert inside.mean() * 2.1**2 == pytest.approx(areas[name], rel=0.02), name


def _relations_by_brute_force(s: Scene) -> set[tuple[int, str, int]]:
    size = s.image.shape[0]
    stats = []
    for mask in s.instance_masks:
        ys, xs = np.nonzero(mask)
        stats.append((xs.mean(), ys.mean(), len(xs)))
    out = set()
    for i, (xi, yi, ai) in enumerate(stats):
        for j, (xj, yj, aj) in enumerate(stats):
            if i == j:
                continue
            m = st.AXIS_MARGIN * size
            checks = {
                "left-of": xj - xi > m,
                "right-of": xi - xj > m,
                "above": yj - yi > m,
                "below": yi - yj > m,
                "bigger-than": ai > st.BIGGER_RATIO * aj,
                "near": ((xi - xj) ** 2 + (yi - yj) ** 2) ** 0.5 < st.NEAR_DISTANCE * size,
            }
            out |= {(i, p, j) for p, ok in checks.items() if ok}
    return out


def test_relations_are_exactly_those_holding_under_geometry(scenes: tuple[ShapesConfig, list[Scene]]) -> None:
    n_rel = 0
    for s in scenes[1]:
        assert len(set(s.relations)) == len(s.relations)
        assert set(s.relations) == _relations_by_brute_force(s)
        n_rel += len(s.relations)
    assert n_rel > 0


SHAPE_OF_WORD = {w: k for k, name in enumerate(st.SHAPES) for w in st.SHAPE_WORDS[name]}
SIZE_OF_WORD = {w: k for k, name in enumerate(st.SIZES) for w in st.SIZE_WORDS[name]}


def _mentions(caption: str) -> list[tuple[int, int, int | None]]:
    """(shape, colour, size or None) for every shape word; asserts a colour word stands right before it."""
    tokens = re.findall(r"[a-z-]+", caption)
    out = []
    for t, tok in enumerate(tokens):
        if tok in SHAPE_OF_WORD:
            assert tokens[t - 1] in st.COLOURS, caption
            size = SIZE_OF_WORD.get(tokens[t - 2]) if t >= 2 else None
            out.append((SHAPE_OF_WORD[tok], st.COLOURS.index(tokens[t - 1]), size))
    return out


def test_captions_mention_only_existing_objects(scenes: tuple[ShapesConfig, list[Scene]]) -> None:
    cfg, items = scenes
    for s in items:
        assert len(s.captions) == cfg.n_captions
        present = {(o.shape, o.colour): o.size for o in s.objects}
        for k, caption in enumerate(s.captions):
            mentions = _mentions(caption)
            assert mentions, caption
            for shape, colour, size in mentions:
                assert (shape, colour) in present, caption
                assert size is None or size == present[(shape, colour)], caption
            if k == 0:  # the first caption lists every object once
                assert sorted((m[0], m[1]) for m in mentions) == sorted(present)


def test_phrases_name_their_object_and_relations_in_captions_hold(scenes: tuple[ShapesConfig, list[Scene]]) -> None:
    pred_re = {p: re.compile(r"\b(" + "|".join(ws) + r")\b") for p, ws in st.PREDICATE_WORDS.items()}
    stated = 0
    for s in scenes[1]:
        for ph in s.phrases:
            assert s.captions[ph.caption][ph.start : ph.start + len(ph.text)] == ph.text
            ((shape, colour, _),) = _mentions(ph.text)
            assert (shape, colour) == (s.objects[ph.obj].shape, s.objects[ph.obj].colour)
        for c, caption in enumerate(s.captions):
            phs = sorted((p for p in s.phrases if p.caption == c), key=lambda p: p.start)
            assert len(phs) == len(_mentions(caption))
            for a, b in itertools.pairwise(phs):
                glue = caption[a.start + len(a.text) : b.start]
                preds = {p for p, rx in pred_re.items() if rx.search(glue)}
                assert len(preds) <= 1, glue
                for p in preds:
                    assert (a.obj, p, b.obj) in s.relations, caption
                    stated += 1
    assert stated > 0


def test_hierarchy_levels_are_nested() -> None:
    family = {"circle": "round", "ellipse": "round", "heart": "round", "square": "angular", "rectangle": "angular",
              "cross": "angular", "triangle": "pointy", "star": "pointy", "diamond": "pointy"}  # fmt: skip
    parent_of_fine: dict[int, int] = {}
    parent_of_middle: dict[int, int] = {}
    for s in _scenes(ShapesConfig(single_object=True), n=300):
        (o,) = s.objects
        coarse, middle, fine = s.hierarchy
        assert middle == o.shape and fine == o.shape * len(st.COLOURS) + o.colour
        assert st.FAMILIES[coarse] == family[st.SHAPES[middle]]
        assert parent_of_fine.setdefault(fine, middle) == middle
        assert parent_of_middle.setdefault(middle, coarse) == coarse
    assert len(set(parent_of_middle.values())) == 3 and len(parent_of_middle) == 9 and len(parent_of_fine) > 50
    assert all(s.hierarchy is None for s in _scenes(ShapesConfig(min_objects=2), n=10))


def _background_hf_energy(s: Scene) -> float:
    """Mean squared 4-neighbour Laplacian of the grey image over pixels whose 3x3 neighbourhood is background."""
    g = s.image.astype(np.float64).mean(2)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    fg = s.semantic > 0
    bg = np.ones_like(lap, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            bg &= ~fg[dy : dy + lap.shape[0], dx : dx + lap.shape[1]]
    return float((lap[bg] ** 2).mean())


def test_domains_differ_in_background_texture_and_palette() -> None:
    src = _scenes(ShapesConfig(domain="source"), n=15)
    tgt = _scenes(ShapesConfig(domain="target"), n=15)
    e_src = np.mean([_background_hf_energy(s) for s in src])
    e_tgt = np.mean([_background_hf_energy(s) for s in tgt])
    # pixel noise alone (std 3 vs 8) would give a ratio of (8 / 3)^2 ~ 7; the target's texture must add far more
    assert e_tgt > 15 * e_src
    # same seed -> same layout, so the object pixels compare colour by colour
    diffs = [
        np.abs(a.image[a.semantic > 0] / 1.0 - b.image[b.semantic > 0]).mean() for a, b in zip(src, tgt, strict=True)
    ]
    assert np.mean(diffs) > 20


HASH_SCRIPT = """
import hashlib, numpy as np
from lowlabel.data.synth.shapes import ShapesConfig, generate_scene
h = hashlib.sha256()
for i in range(6):
    s = generate_scene(np.random.default_rng([11, i]), ShapesConfig(domain="target"))
    for a in (s.image, s.semantic, s.instance_masks, s.boxes):
        h.update(a.tobytes())
    h.update(repr((s.captions, s.phrases, s.relations)).encode())
print(h.hexdigest())
"""


def test_same_seed_is_byte_identical_across_processes() -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src, "PYTHONHASHSEED": "random"}
    procs = [subprocess.Popen([sys.executable, "-c", HASH_SCRIPT], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] and len(outs[0]) == 64
    h = hashlib.sha256()
    for i in range(6):
        s = generate_scene(np.random.default_rng([11, i]), ShapesConfig(domain="target"))
        for a in (s.image, s.semantic, s.instance_masks, s.boxes):
            h.update(a.tobytes())
        h.update(repr((s.captions, s.phrases, s.relations)).encode())
    assert h.hexdigest() == outs[0]


def test_dataloader_workers_give_identical_batches() -> None:
    ds = ShapesDataset(12, seed=5, cfg=ShapesConfig(size=48))
    serial = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0))
    parallel = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2))
    for a, b in zip(serial, parallel, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_dataset_item_matches_scene() -> None:
    cfg = ShapesConfig(size=40)
    ds = ShapesDataset(5, seed=2, cfg=cfg)
    for i in range(len(ds)):
        item, s = ds[i], ds.scene(i)
        n = len(s.objects)
        assert item["image"].shape == (3, 40, 40) and item["image"].dtype == torch.float32
        assert torch.allclose(item["image"] * 255, torch.from_numpy(s.image).permute(2, 0, 1).float(), atol=1e-3)
        assert torch.equal(item["semantic"], torch.from_numpy(s.semantic))
        assert item["boxes"].shape == (cfg.max_objects, 4) and (item["boxes"][n:] == 0).all()
        assert item["labels"][:n].tolist() == [o.shape for o in s.objects] and (item["labels"][n:] == -1).all()
        assert item["n_objects"] == n and item["domain"] == 0
        largest = max(range(n), key=lambda j: s.instance_masks[j].sum())
        assert item["shape"] == s.objects[largest].shape
        assert torch.equal((item["instances"] == 1), torch.from_numpy(s.instance_masks[0]))
    with pytest.raises(IndexError):
        ds[5]


def test_judge_values() -> None:
    a, b = _scenes(ShapesConfig(min_objects=3), n=2)
    assert scene_similarity(a, a) == 1.0
    assert scene_similarity(a, dataclasses.replace(a, image=b.image)) == 1.0  # pixels play no part
    assert scene_similarity(a, b) == pytest.approx(scene_similarity(b, a))
    assert scene_similarity(a, b) < 1.0

    def scene(keys: list[tuple[int, int, int]], rels: list[tuple[int, str, int]]) -> Scene:
        objs = [dataclasses.replace(a.objects[0], shape=sh, colour=co, size=si) for sh, co, si in keys]
        return dataclasses.replace(a, objects=objs, relations=rels)

    x = scene([(0, 0, 0), (1, 1, 1)], [(0, "left-of", 1)])
    # same objects, one size differs, one extra relation: J(shape,colour)=1, J(+size)=1/3, J(relations)=1/2
    y = scene([(0, 0, 0), (1, 1, 2)], [(0, "left-of", 1), (1, "right-of", 0)])
    assert scene_similarity(x, y) == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    # same shapes and geometry, other colours: nothing shared
    z = scene([(0, 2, 0), (1, 3, 1)], [(0, "left-of", 1)])
    assert scene_similarity(x, z) == 0.0
    # two one-object scenes: both relation sets are empty, so that component is left out of the mean
    assert scene_similarity(scene([(0, 0, 0)], []), scene([(1, 1, 1)], [])) == 0.0  # not 1/3
    assert scene_similarity(scene([(0, 0, 0)], []), scene([(0, 0, 2)], [])) == pytest.approx((1 + 0) / 2)
    # one empty relation set against a non-empty one still counts (Jaccard 0): J = 1/2, 1/2, 0
    assert scene_similarity(scene([(0, 0, 0)], []), x) == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    # no objects at all on both sides counts as identical; against a non-empty scene it shares nothing
    assert scene_similarity(scene([], []), scene([], [])) == 1.0
    assert scene_similarity(scene([], []), x) == 0.0


def test_batched_judge_equals_pairwise() -> None:
    items = _scenes(ShapesConfig(), n=14) + _scenes(ShapesConfig(single_object=True), n=4)
    items.append(dataclasses.replace(items[0], objects=[], relations=[]))  # all key sets empty
    m = scene_similarity_matrix(items)
    ref = np.array([[scene_similarity(p, q) for q in items] for p in items])
    np.testing.assert_allclose(m, ref, atol=1e-12)
    np.testing.assert_allclose(np.diag(m), 1.0)
    single = [i for i, x in enumerate(items) if len(x.objects) == 1]
    assert len(single) >= 4 and m[-1, :-1].max() == 0.0
    for i, j in itertools.combinations(single, 2):  # relation-less pairs: mean of the two object Jaccards only
        p, q = items[i].objects[0], items[j].objects[0]
        same = (p.shape, p.colour) == (q.shape, q.colour)
        assert m[i, j] == (0.0 if not same else (1.0 + (p.size == q.size)) / 2)
    np.testing.assert_allclose(scene_similarity_matrix(items[:3], items[5:]), ref[:3, 5:], atol=1e-12)


def test_bad_config_raises() -> None:
    with pytest.raises(LowlabelError, match="size"):
        ShapesConfig(size=8)
    with pytest.raises(LowlabelError, match="domain"):
        ShapesConfig(domain="night")
    with pytest.raises(LowlabelError, match="min_objects"):
        ShapesConfig(min_objects=4, max_objects=2)


def test_preview_writes_png(tmp_path: Path) -> None:
    out = preview(n=3, out=tmp_path / "sub" / "shapes.png", seed=1)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
