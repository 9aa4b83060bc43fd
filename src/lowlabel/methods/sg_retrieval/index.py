"""Embedding many graphs, the exported model file, and the faiss inner-product index used by `lowlabel sgr`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine.batches import embed
from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.files import atomic_path, read_json, write_json
from lowlabel.methods.sg_retrieval.graphs import PackedGraphs
from lowlabel.methods.sg_retrieval.model import GraphEmbedding
from lowlabel.nn.text import label_embedder


@dataclass
class ModelSpec:
    """What rebuilds a trained GraphEmbedding: its keyword arguments and the label embedder of its node features."""

    in_dim: int
    hidden: int
    layers: int
    conv: str
    gin_mlp_hidden: int
    official_padding: bool
    label_embedder: str

    def build(self) -> GraphEmbedding:
        kwargs = asdict(self)
        kwargs.pop("label_embedder")
        return GraphEmbedding(**kwargs)


def export_model(model: GraphEmbedding, spec: ModelSpec, path: Path) -> Path:
    """Write a self-describing weights-only file: {"spec": ModelSpec fields, "model": state dict} (the "model" key
    of a trainer checkpoint, so `engine.checkpoint.load_into` reads both)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return ckpt.atomic_save({"spec": asdict(spec), "model": state}, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[GraphEmbedding, ModelSpec]:
    """A model written by `export_model` (the `model.pt` of a training run), in eval mode on `device`."""
    payload = ckpt.load(path, map_location="cpu")
    if not isinstance(payload, dict) or "spec" not in payload or "model" not in payload:
        older = isinstance(payload, dict) and "state_dict" in payload  # the layout before the "model" key
        raise LowlabelError(
            f"{path} is not an exported IRSGS model; pass the model.pt that `lowlabel train sg_retrieval` writes "
            "in its run folder" + (" (this file has the older 'state_dict' layout: rename that key to 'model')"
                                   if older else "")
        )
    spec = ModelSpec(**payload["spec"])
    return ckpt.load_into(spec.build().to(device), path, map_location=device).eval(), spec


def embed_graphs(
    model: GraphEmbedding, graphs: PackedGraphs, table: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """(G, H) unit embeddings of every packed graph, in order, `batch_size` graphs per sparse batch (batches in
    order, so `official_padding` pads each batch as the official code does); leaves `model` in eval mode."""
    model.eval()
    index = torch.arange(len(graphs))
    return embed(lambda chunk: model(*graphs.batch(chunk, table)), index, batch_size=batch_size)


def build_index(embeddings: torch.Tensor, ids: list[str], out: Path, meta: dict) -> Path:
    """Write folder `out`: index.faiss (IndexFlatIP over the unit embeddings), ids.json, meta.json."""
    faiss = require("faiss", "graph", "the graph index")

    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings.detach().cpu().numpy(), dtype=np.float32))
    with atomic_path(out / "index.faiss") as tmp:
        faiss.write_index(index, str(tmp))
    write_json(out / "ids.json", ids)
    write_json(out / "meta.json", meta)
    return out


class GraphIndex:
    """A folder written by `build_index`: full-database search and re-ranking of candidate lists."""

    def __init__(self, folder: str | Path) -> None:
        faiss = require("faiss", "graph", "the graph index")

        self.folder = Path(folder)
        if not (self.folder / "index.faiss").is_file():
            raise LowlabelError(
                f"{self.folder} is not a graph index (no index.faiss); build one with `lowlabel sgr index`"
            )
        self.index = faiss.read_index(str(self.folder / "index.faiss"))
        self.ids: list[str] = read_json(self.folder / "ids.json", "index id list")
        self.meta: dict = read_json(self.folder / "meta.json", "index metadata")
        self.position = {image_id: i for i, image_id in enumerate(self.ids)}

    def vector(self, image_id: str) -> np.ndarray:
        """(H,) stored embedding of an indexed image."""
        if image_id not in self.position:
            raise LowlabelError(f"image id {image_id} is not in the index {self.folder} ({len(self.ids)} images)")
        return self.index.reconstruct(self.position[image_id])

    def search(self, query: np.ndarray, k: int, exclude: str | None = None) -> list[tuple[str, float]]:
        """Top-k (id, score) by inner product over the whole database; `exclude` drops one id (the query itself)."""
        extra = 1 if exclude is not None else 0
        scores, found = self.index.search(np.ascontiguousarray(query[None], dtype=np.float32), k + extra)
        hits = [(self.ids[j], float(s)) for j, s in zip(found[0], scores[0], strict=True) if j >= 0]
        return [h for h in hits if h[0] != exclude][:k]

    def rerank(self, query: np.ndarray, candidates: list[str]) -> list[tuple[str, float]]:
        """The candidates (the official protocol's 100-image pool) sorted by score with the query, best first."""
        missing = [c for c in candidates if c not in self.position]
        if missing:
            raise LowlabelError(f"candidate ids not in the index {self.folder}: {', '.join(missing[:5])}")
        vectors = np.stack([self.vector(c) for c in candidates])
        scores = vectors @ query
        order = np.argsort(-scores, kind="stable")
        return [(candidates[j], float(scores[j])) for j in order]


def embed_records(model: GraphEmbedding, spec: ModelSpec, graphs: list, batch_size: int = 512) -> torch.Tensor:
    """(G, H) embeddings of SceneGraphs with the node features of the model's label embedder."""
    packed = PackedGraphs(graphs)
    device = next(model.parameters()).device
    table = packed.label_table(label_embedder(spec.label_embedder)).to(device)
    if table.shape[1] != spec.in_dim:
        raise LowlabelError(
            f"label embedder '{spec.label_embedder}' gives {table.shape[1]}-d features, the model expects {spec.in_dim}"
        )
    return embed_graphs(model, packed, table, batch_size)
