"""Readers for the official formats (VG scene_graphs.json, the IRSGS graph pickle, COCO/Karpathy caption JSON,
relevance .npy), the two data sources of training (`official_data`: a folder of those files; `shapes_data`: the shapes
world) and the training-pair sampler of IRSGS."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from lowlabel.engine.runtime import Runtime
from lowlabel.errors import LowlabelError
from lowlabel.methods.sg_retrieval.graphs import PackedGraphs, SceneGraph, build_graph, from_adjacency, shapes_graph
from lowlabel.methods.sg_retrieval.losses import caption_relevance
from lowlabel.nn import text


def load_json(path: Path) -> Any:
    """Parsed JSON of `path`; a missing or malformed file is an error naming it."""
    if not path.is_file():
        raise LowlabelError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except json.JSONDecodeError as err:
        raise LowlabelError(f"{path} is not valid JSON: {err}") from None


def vg_record_graph(record: dict, where: str = "input") -> SceneGraph:
    """One Visual Genome scene_graphs.json record -> SceneGraph (objects[].names[0], objects[].attributes,
    relationships[] with subject_id/object_id or subject/object dicts, predicate)."""
    image_id = record.get("image_id", record.get("id"))
    if image_id is None:
        raise LowlabelError(f"{where}: a scene-graph record has no image_id")
    objects = record.get("objects") or []
    position, names, attrs = {}, [], []
    for k, obj in enumerate(objects):
        oid = obj.get("object_id", obj.get("id"))
        label = (obj.get("names") or [obj.get("name", "")])[0]
        if oid is None or not label:
            raise LowlabelError(f"{where}: image {image_id}, object {k} lacks object_id or a name")
        position[oid] = k
        names.append(label)
        attrs.append(list(obj.get("attributes") or []))
    relations = []
    for k, rel in enumerate(record.get("relationships") or []):
        sid = rel.get("subject_id", (rel.get("subject") or {}).get("object_id"))
        oid = rel.get("object_id", (rel.get("object") or {}).get("object_id"))
        if sid not in position or oid not in position:
            missing = sid if sid not in position else oid
            raise LowlabelError(
                f"{where}: image {image_id}, relationship {rel.get('relationship_id', k)} ('{rel.get('predicate')}') "
                f"refers to object id {missing}, which is not among the image's objects; fix or drop the relationship"
            )
        relations.append((position[sid], str(rel.get("predicate", "")), position[oid]))
    return build_graph(str(image_id), names, attrs, relations)


def read_vg_scene_graphs(path: str | Path) -> list[SceneGraph]:
    """Visual Genome `scene_graphs.json` (a list of per-image records) -> graphs, in file order."""
    path = Path(path)
    records = load_json(path)
    if not isinstance(records, list):
        raise LowlabelError(f"{path}: expected a JSON list of scene-graph records (Visual Genome scene_graphs.json)")
    return [vg_record_graph(r, str(path)) for r in records]


class _ArraysOnly(pickle.Unpickler):
    """Unpickler that builds plain containers and numpy arrays only (no arbitrary code from the file)."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
        ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_graph_pickle(path: str | Path) -> list[SceneGraph]:
    """The official graph pickle: a list of dicts with `node_labels`, `adj` (N x N directed 0/1) and `imgid` or
    `cocoid`. Only plain containers and numpy arrays are unpickled."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"graph pickle {path} does not exist")
    try:
        with path.open("rb") as fh:
            records = _ArraysOnly(fh).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise LowlabelError(f"{path} is not an IRSGS graph pickle of plain lists/dicts/arrays: {err}") from None
    if not isinstance(records, list):
        raise LowlabelError(f"{path}: expected a list of graph dicts, found {type(records).__name__}")
    graphs = []
    for k, rec in enumerate(records):
        image_id = rec.get("imgid", rec.get("cocoid", k)) if isinstance(rec, dict) else k
        if not isinstance(rec, dict) or "node_labels" not in rec or "adj" not in rec:
            raise LowlabelError(f"{path}: record {k} (image {image_id}) lacks node_labels/adj")
        graphs.append(from_adjacency(str(image_id), list(rec["node_labels"]), np.asarray(rec["adj"])))
    return graphs


def read_graphs(path: str | Path) -> list[SceneGraph]:
    """Graphs from a VG-style .json or an official .pkl/.pickle file."""
    path = Path(path)
    if path.suffix in (".pkl", ".pickle"):
        return read_graph_pickle(path)
    if path.suffix == ".json":
        return read_vg_scene_graphs(path)
    raise LowlabelError(f"{path}: unknown graph file type; use VG scene_graphs.json or the official .pkl layout")


def read_captions(path: str | Path) -> dict[str, list[str]]:
    """Captions per image id (annotation order) from COCO captions JSON (`annotations[*].image_id/caption`) or a
    Karpathy split JSON (`images[*].sentences[*].raw`, id = cocoid if present, else imgid)."""
    path = Path(path)
    data = load_json(path)
    out: dict[str, list[str]] = {}
    if isinstance(data, dict) and "annotations" in data:
        for k, ann in enumerate(data["annotations"]):
            if "image_id" not in ann or "caption" not in ann:
                raise LowlabelError(f"{path}: annotation {k} lacks image_id or caption")
            out.setdefault(str(ann["image_id"]), []).append(str(ann["caption"]))
        return out
    if isinstance(data, dict) and "images" in data:
        for k, img in enumerate(data["images"]):
            image_id = img.get("cocoid", img.get("imgid"))
            if image_id is None or "sentences" not in img:
                raise LowlabelError(f"{path}: image entry {k} lacks cocoid/imgid or sentences")
            out[str(image_id)] = [str(s.get("raw", "")) for s in img["sentences"]]
        return out
    raise LowlabelError(f"{path}: not a COCO captions file (annotations) nor a Karpathy split file (images)")


def read_relevance(matrix: str | Path, ids: str | Path) -> tuple[torch.Tensor, list[str]]:
    """The official relevance files: (N, N) float32 `<ds>_sbert_mean.npy` and the (N,) id `.npy` (sorted ids)."""
    rel, idx = np.load(matrix, mmap_mode="r"), np.load(ids)
    if rel.ndim != 2 or rel.shape[0] != rel.shape[1] or rel.shape[0] != len(idx):
        raise LowlabelError(f"relevance {matrix} has shape {rel.shape} but {ids} holds {len(idx)} ids")
    return torch.from_numpy(np.asarray(rel, dtype=np.float32)), [str(i) for i in idx.tolist()]


def caption_arrays(captions: dict[str, list[str]], ids: list[str]) -> tuple[list[str], torch.Tensor]:
    """Flat caption list and its (M,) image index into `ids`, for `losses.caption_relevance`; an id without any
    caption is an error naming it."""
    texts, owner = [], []
    for i, image_id in enumerate(ids):
        caps = captions.get(image_id)
        if not caps:
            raise LowlabelError(
                f"image {image_id} has a scene graph but no caption; captions define the training target"
            )
        texts += caps
        owner += [i] * len(caps)
    return texts, torch.tensor(owner, dtype=torch.long)


@dataclass
class RetrievalData:
    """Graphs, their (N, N) surrogate relevance, and train/test index tensors (scenes: shapes-world ground truth)."""

    graphs: list[SceneGraph]
    relevance: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor
    encoder: str
    scenes: list | None = None


def _split(n: int, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) indices: the last `test_fraction` of the n images (at least one) are the test split."""
    n_test = max(1, round(n * test_fraction))
    if n - n_test < 2:
        raise LowlabelError(f"{n} images are too few to split off {n_test} test images; add data")
    return torch.arange(n - n_test), torch.arange(n - n_test, n)


def shapes_data(n_scenes: int, *, captions_per_image: int = 5, encoder: str = "minilm", test_fraction: float = 0.2,
                seed: int = 0) -> RetrievalData:
    """Shapes-world scenes: ground-truth scene graphs, `captions_per_image` templated captions each, relevance from
    the sentence `encoder` (minilm | tfidf); the last `test_fraction` of the scenes are the test split."""
    from lowlabel.data.synth.shapes import ShapesConfig, ShapesDataset

    world = ShapesDataset(n_scenes, seed=seed, cfg=ShapesConfig(n_captions=captions_per_image))
    scenes = [world.scene(i) for i in range(n_scenes)]
    graphs = [shapes_graph(s.scene_graph(), str(i)) for i, s in enumerate(scenes)]
    texts = [c for s in scenes for c in s.captions]
    owner = torch.arange(len(scenes)).repeat_interleave(torch.tensor([len(s.captions) for s in scenes]))
    emb = text.sentence_encoder(encoder).encode(texts)
    rel = caption_relevance(emb, owner, n_images=len(scenes), captions_per_image=captions_per_image)
    train, test = _split(len(scenes), test_fraction)
    return RetrievalData(graphs, rel, train, test, encoder, scenes)


def official_data(root: str | Path, *, captions_per_image: int = 5, encoder: str = "minilm",
                  test_fraction: float = 0.2) -> RetrievalData:
    """A folder with graphs (scene_graphs.json or *.pkl), captions (captions.json: COCO or Karpathy; relevance from
    the sentence `encoder`) or relevance (*_sbert_mean.npy + *_sbert_img_id.npy), and optionally split.json
    {image_id: "train" | "test"} (else the last `test_fraction` of the graphs are the test split)."""
    root = Path(root)
    if not root.is_dir():
        raise LowlabelError(f"--data {root} is not a folder")
    graph_files = [root / "scene_graphs.json"] if (root / "scene_graphs.json").is_file() else sorted(root.glob("*.pkl"))
    if not graph_files:
        raise LowlabelError(f"{root} holds no scene_graphs.json and no *.pkl graph file")
    graphs = read_graphs(graph_files[0])
    ids = [g.image_id for g in graphs]
    rel_files = sorted(root.glob("*_sbert_mean.npy"))
    if rel_files:
        rel_all, rel_ids = read_relevance(rel_files[0], str(rel_files[0]).replace("_mean.npy", "_img_id.npy"))
        where = {r: i for i, r in enumerate(rel_ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise LowlabelError(f"{rel_files[0]} has no row for images {', '.join(missing[:5])}")
        pos = torch.tensor([where[i] for i in ids])
        rel, source = rel_all[pos][:, pos], f"precomputed:{rel_files[0].name}"
    elif (root / "captions.json").is_file():
        texts, owner = caption_arrays(read_captions(root / "captions.json"), ids)
        emb = text.sentence_encoder(encoder).encode(texts)
        rel = caption_relevance(emb, owner, n_images=len(ids), captions_per_image=captions_per_image)
        source = encoder
    else:
        raise LowlabelError(f"{root} holds neither captions.json nor *_sbert_mean.npy: one defines the training target")
    if (root / "split.json").is_file():
        split = load_json(root / "split.json")
        train = torch.tensor([i for i, g in enumerate(ids) if split.get(g) == "train"], dtype=torch.long)
        test = torch.tensor([i for i, g in enumerate(ids) if split.get(g) == "test"], dtype=torch.long)
        if len(train) < 2 or len(test) < 1:
            raise LowlabelError(
                f"{root / 'split.json'} leaves {len(train)} train / {len(test)} test images that have graphs"
            )
    else:
        train, test = _split(len(ids), test_fraction)
    return RetrievalData(graphs, rel, train, test, source)


class PairBatches:
    """IRSGS `tail_random` pairs: every anchor once per epoch (shuffled by (seed, epoch)); its partner is drawn
    uniformly from its `tail_range` most relevant other images with probability 0.5, else uniformly from all
    others. Batch = (GraphBatch of the 2B graphs [anchors; partners], (B,) targets rel(anchor, partner)).

    relevance: (N, N) surrogate relevance of the training images (not clamped). Deviation: the official code drops
    the first sorted entry as "self"; here the anchor itself is excluded explicitly (equal when rel(i, i) is the row
    maximum). The last partial batch of an epoch is dropped.
    """

    def __init__(
        self,
        graphs: PackedGraphs,
        table: torch.Tensor,
        relevance: torch.Tensor,
        batch_size: int,
        runtime: Runtime,
        *,
        tail_range: int = 100,
        seed: int = 0,
    ) -> None:
        n = len(graphs)
        if relevance.shape != (n, n):
            raise LowlabelError(f"relevance is {tuple(relevance.shape)} for {n} graphs; it must be ({n}, {n})")
        if n < 2:
            raise LowlabelError("training pairs need at least two images")
        self.graphs, self.table, self.runtime, self.seed = graphs, table, runtime, seed
        self.relevance = relevance.float().cpu()
        self.batch_size, self.tail = batch_size, min(tail_range, n - 1)
        masked = self.relevance.clone()
        masked.fill_diagonal_(-float("inf"))
        self.top = torch.topk(masked, self.tail, dim=1).indices  # (N, tail)
        self.per_rank = n // runtime.world_size
        self.steps_per_epoch = self.per_rank // batch_size
        if self.steps_per_epoch == 0:
            raise LowlabelError(f"{n} training images give no full batch of {batch_size} pairs; lower the batch size")

    def partners(self, anchors: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B,) partner per anchor: half the time from its top `tail_range`, else uniform over the other images."""
        n = len(self.graphs)
        from_top = torch.rand(len(anchors), generator=gen) < 0.5
        top_pick = self.top[anchors, torch.randint(self.tail, (len(anchors),), generator=gen)]
        uniform = torch.randint(n - 1, (len(anchors),), generator=gen)
        uniform = uniform + (uniform >= anchors).long()  # skip the anchor itself
        return torch.where(from_top, top_pick, uniform)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.graphs), generator=gen)
        anchors = order[self.runtime.rank * self.per_rank : (self.runtime.rank + 1) * self.per_rank]
        partners = self.partners(anchors, gen)
        for b in range(start, self.steps_per_epoch):
            a = anchors[b * self.batch_size : (b + 1) * self.batch_size]
            p = partners[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.graphs.batch(torch.cat([a, p]), self.table), self.relevance[a, p].to(self.table.device)
