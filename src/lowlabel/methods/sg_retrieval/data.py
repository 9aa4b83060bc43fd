"""Readers for the official formats (VG scene_graphs.json, the IRSGS graph pickle, COCO/Karpathy caption JSON,
relevance .npy, split JSON, ResNet-152 features HDF5, the human relevance judgements triplets.csv + anon_results.csv)
and the training-pair sampler of IRSGS. Every reader turns a broken file into a LowlabelError naming it."""

from __future__ import annotations

import csv
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from lowlabel.engine.runtime import Runtime
from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.files import read_json
from lowlabel.methods.sg_retrieval.graphs import PackedGraphs, SceneGraph, build_graph, from_adjacency


def load_json(path: Path, what: str = "JSON file") -> Any:
    """Parsed JSON of `path`; a missing, non-UTF-8 or malformed file is an error naming it."""
    return read_json(path, what)


def _labels(value: Any, where: str) -> list[str]:
    """A list of label strings (a single string is one label); anything else is an error naming `where`."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise LowlabelError(f"{where}: expected a list of label strings, found {str(value)[:60]}")
    return value


def vg_record_graph(record: Any, where: str = "input") -> SceneGraph:
    """One Visual Genome scene_graphs.json record -> SceneGraph (objects[].names[0], objects[].attributes,
    relationships[] with subject_id/object_id or subject/object dicts, predicate)."""
    if not isinstance(record, dict):
        raise LowlabelError(f"{where}: a scene-graph record is {type(record).__name__}, not an object")
    image_id = record.get("image_id", record.get("id"))
    if image_id is None:
        raise LowlabelError(f"{where}: a scene-graph record has no image_id")
    objects, relationships = record.get("objects") or [], record.get("relationships") or []
    if not isinstance(objects, list) or not isinstance(relationships, list):
        raise LowlabelError(f"{where}: image {image_id}: objects and relationships must be lists")
    position, names, attrs = {}, [], []
    for k, obj in enumerate(objects):
        oid = obj.get("object_id", obj.get("id")) if isinstance(obj, dict) else None
        label = _labels(obj.get("names") or obj.get("name") or [], f"{where}: image {image_id}, object {k} names") \
            if isinstance(obj, dict) else []
        if oid is None or not isinstance(oid, (int, str)) or not label:
            raise LowlabelError(f"{where}: image {image_id}, object {k} lacks object_id or a name")
        position[oid] = k
        names.append(label[0])
        attrs.append(_labels(obj.get("attributes") or [], f"{where}: image {image_id}, object {k} attributes"))
    relations = []
    for k, rel in enumerate(relationships):
        if not isinstance(rel, dict):
            raise LowlabelError(f"{where}: image {image_id}, relationship {k} is not an object")
        sid = rel.get("subject_id", _object_id(rel.get("subject")))
        oid = rel.get("object_id", _object_id(rel.get("object")))
        predicate = rel.get("predicate", "")
        if not isinstance(predicate, str):
            raise LowlabelError(f"{where}: image {image_id}, relationship {k}: predicate must be a string")
        missing = [i for i in (sid, oid) if not isinstance(i, (int, str)) or i not in position]
        if missing:
            raise LowlabelError(
                f"{where}: image {image_id}, relationship {rel.get('relationship_id', k)} ('{predicate}') "
                f"refers to object id {missing[0]}, which is not among the image's objects; fix or drop the "
                "relationship"
            )
        relations.append((position[sid], predicate, position[oid]))
    return build_graph(str(image_id), names, attrs, relations, where)


def _object_id(ref: Any) -> Any:
    return ref.get("object_id") if isinstance(ref, dict) else None


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
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError, IndexError, KeyError,
            UnicodeDecodeError, OverflowError, MemoryError) as err:
        raise LowlabelError(f"{path} is not an IRSGS graph pickle of plain lists/dicts/arrays: {err}") from None
    if not isinstance(records, list):
        raise LowlabelError(f"{path}: expected a list of graph dicts, found {type(records).__name__}")
    graphs = []
    for k, rec in enumerate(records):
        image_id = rec.get("imgid", rec.get("cocoid", k)) if isinstance(rec, dict) else k
        if not isinstance(rec, dict) or "node_labels" not in rec or "adj" not in rec:
            raise LowlabelError(f"{path}: record {k} (image {image_id}) lacks node_labels/adj")
        labels = _labels(list(rec["node_labels"]) if isinstance(rec["node_labels"], (list, tuple)) else None,
                         f"{path}: record {k} node_labels")
        graphs.append(from_adjacency(str(image_id), labels, rec["adj"], where=str(path)))
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
    data = load_json(path, "captions file")
    out: dict[str, list[str]] = {}
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        for k, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
                raise LowlabelError(f"{path}: annotation {k} lacks image_id or a caption string")
            out.setdefault(str(ann["image_id"]), []).append(ann["caption"])
        return out
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        for k, img in enumerate(data["images"]):
            image_id = img.get("cocoid", img.get("imgid")) if isinstance(img, dict) else None
            sentences = img.get("sentences") if isinstance(img, dict) else None
            if image_id is None or not isinstance(sentences, list) or not all(isinstance(x, dict) for x in sentences):
                raise LowlabelError(f"{path}: image entry {k} lacks cocoid/imgid or a list of sentences")
            out[str(image_id)] = [str(x.get("raw", "")) for x in sentences]
        return out
    raise LowlabelError(f"{path}: not a COCO captions file (annotations) nor a Karpathy split file (images)")


def _load_npy(path: Path, what: str) -> np.ndarray:
    """A numeric .npy array (no pickled objects); a missing or corrupt file is an error naming it."""
    if not path.is_file():
        raise LowlabelError(f"{what} {path} does not exist")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise LowlabelError(f"{what} {path} is not a readable .npy array ({err})") from None


def read_relevance(matrix: str | Path, ids: str | Path) -> tuple[torch.Tensor, list[str]]:
    """The official relevance files: (N, N) float32 `<ds>_sbert_mean.npy` and the (N,) id `.npy` (sorted ids)."""
    matrix, ids = Path(matrix), Path(ids)
    rel, idx = _load_npy(matrix, "relevance matrix"), _load_npy(ids, "relevance ids")
    if rel.ndim != 2 or rel.shape[0] != rel.shape[1] or idx.ndim != 1 or rel.shape[0] != len(idx):
        raise LowlabelError(f"relevance {matrix} has shape {rel.shape} but {ids} holds {idx.shape} ids; they must be "
                            "(N, N) and (N,)")
    if rel.dtype.kind not in "fiu":
        raise LowlabelError(f"relevance {matrix} holds {rel.dtype}, not numbers")
    out = torch.from_numpy(np.array(rel, dtype=np.float32))
    if not bool(torch.isfinite(out).all()):
        raise LowlabelError(f"relevance {matrix} holds NaN or Inf; recompute it")
    return out, [str(i) for i in idx.tolist()]


def read_split(path: str | Path) -> dict[str, str]:
    """The official split JSON {image_id: "train" | "test" | ...} (other values, e.g. "val", are ignored)."""
    path = Path(path)
    split = load_json(path, "split file")
    if not isinstance(split, dict) or not all(isinstance(v, str) for v in split.values()):
        raise LowlabelError(f"{path}: expected a JSON object {{image_id: \"train\" | \"test\"}}")
    return {str(k): v for k, v in split.items()}


def read_resnet_features(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """The official ResNet-152 feature file (preprocess/extract_resnet_feature.py): HDF5 with `resnet_feature`
    (N, D) float (D = 2048, penultimate layer) and `id` (N,) image ids -> ((N, D) float32, ids as strings)."""
    h5py = require("h5py", "medical", "the official ResNet features file")
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"ResNet features file {path} does not exist")
    try:
        with h5py.File(path, "r") as fh:
            if "resnet_feature" not in fh or "id" not in fh:
                raise LowlabelError(f"{path}: expected HDF5 datasets 'resnet_feature' (N, D) and 'id' (N,), found "
                                    f"{sorted(fh.keys())}")
            features, ids = np.asarray(fh["resnet_feature"][()]), np.asarray(fh["id"][()])
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise LowlabelError(f"ResNet features file {path} is not a readable HDF5 file ({err})") from None
    if features.ndim != 2 or ids.ndim != 1 or len(ids) != len(features) or features.dtype.kind not in "fiu":
        raise LowlabelError(f"{path}: resnet_feature is {features.shape} {features.dtype} and id is {ids.shape}; "
                            "they must be (N, D) numbers and (N,)")
    if not np.isfinite(features).all():
        raise LowlabelError(f"{path}: resnet_feature holds NaN or Inf; re-extract the features")
    names = [i.decode("utf-8", "replace") if isinstance(i, bytes) else str(i) for i in ids.tolist()]
    return torch.from_numpy(features.astype(np.float32)), names


def _csv_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV file with a header holding `columns`; a missing, non-UTF-8 or short file names itself."""
    if not path.is_file():
        raise LowlabelError(f"{path} does not exist")
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
                raise LowlabelError(f"{path}: the header must name the columns {', '.join(columns)}")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise LowlabelError(f"{path} is not a UTF-8 CSV file ({err})") from None
    for n, row in enumerate(rows, 2):
        if any(row.get(c) in (None, "") for c in columns):
            raise LowlabelError(f"{path} line {n}: a value of {', '.join(columns)} is missing")
    return rows


def read_human_ratings(triplets: str | Path, answers: str | Path) -> tuple[list[tuple[str, str, str]], torch.Tensor]:
    """The official human relevance judgements: `triplets.csv` (triplet_id, query_id, target_id1, target_id2) and
    `anon_results.csv` (user_id, answer, triplet_id; answer 0 = target 1 more relevant, 1 = target 2, 2 = both,
    3 = neither) -> the (query, target1, target2) id triples in file order and their (T, 4) vote counts
    (o1, o2, both, neither), as the authors' notebook pivots them."""
    triplets, answers = Path(triplets), Path(answers)
    rows = _csv_rows(triplets, ("triplet_id", "query_id", "target_id1", "target_id2"))
    position = {r["triplet_id"]: k for k, r in enumerate(rows)}
    votes = torch.zeros(len(rows), 4, dtype=torch.long)
    for n, row in enumerate(_csv_rows(answers, ("user_id", "answer", "triplet_id")), 2):
        if row["answer"] not in ("0", "1", "2", "3"):
            raise LowlabelError(f"{answers} line {n}: answer '{row['answer']}' is not 0, 1, 2 or 3")
        if row["triplet_id"] not in position:
            raise LowlabelError(f"{answers} line {n}: triplet {row['triplet_id']} is not in {triplets}")
        votes[position[row["triplet_id"]], int(row["answer"])] += 1
    return [(r["query_id"], r["target_id1"], r["target_id2"]) for r in rows], votes


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
