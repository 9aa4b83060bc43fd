"""IRSGS recipe: config with the official defaults, training through the engine, evaluation, a smoke case.

Official training (spec "Training"): Adam at lr 1e-4, ExponentialLR 0.9 stepped once per epoch, 25 epochs of
batches of 32 (anchor, partner) pairs; the data sources and the pair sampler live in data.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from lowlabel.data.io import IMAGE_EXTS, read_image
from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine.config import save_config
from lowlabel.engine.demo import SmokeCase
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.runtime import Runtime
from lowlabel.engine.trainer import Trainer
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json
from lowlabel.methods.sg_retrieval import index
from lowlabel.methods.sg_retrieval.data import PairBatches
from lowlabel.methods.sg_retrieval.evaluation import human_agreement, ranking_metrics
from lowlabel.methods.sg_retrieval.figures import retrieval_figure, top_matches
from lowlabel.methods.sg_retrieval.graphs import GraphBatch, PackedGraphs, SceneGraph, shapes_graph
from lowlabel.methods.sg_retrieval.losses import pair_scores, relevance_mse
from lowlabel.methods.sg_retrieval.model import GraphEmbedding
from lowlabel.methods.sg_retrieval.sources import RetrievalData, official_data, shapes_data
from lowlabel.nn.text import label_embedder


@dataclass
class ModelConfig:
    conv: str = "gcn"  # "gcn" (IRSGS-GCN) or "gin" (IRSGS-GIN)
    in_dim: int = 0  # node-feature width; 0 = the label embedder's (training writes the width into config.yaml)
    hidden: int = 300
    layers: int = 3
    gin_mlp_hidden: int = 512
    official_padding: bool = False  # True = the official padding-dependent readout (reproduction only)


@dataclass
class DataConfig:
    n_scenes: int = 1500  # shapes-world size when no --data is given
    captions_per_image: int = 5
    test_fraction: float = 0.2  # used when the data has no split.json
    sentence_encoder: str = "minilm"  # caption encoder of the surrogate relevance: minilm | tfidf
    label_embedder: str = "minilm"  # node features: minilm | glove:PATH | random:DIM
    batch_size: int = 32  # (anchor, partner) pairs per step
    tail_range: int = 100
    eval_queries: int = 0  # the first N test images are the queries (0 = all); the database is the whole test split
    first_stage_pool: int = 100  # candidates per query from the ResNet features (official protocol), when given
    seed: int = 0


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    # Adam 1e-4 (torch defaults otherwise); lr x0.9 after every epoch (ExponentialLR stepped per epoch)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="adam", lr=1e-4, schedule="exponential", gamma=0.9))
    # 25 passes over the training anchors
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=25, log_every=50, checkpoint_every=500))


def load_data(cfg: DataConfig, data: Path | None) -> RetrievalData:
    """The shapes world (data None) or a user's dataset: a folder or a manifest (`sources.official_data`)."""
    if data is None:
        return shapes_data(cfg.n_scenes, captions_per_image=cfg.captions_per_image, encoder=cfg.sentence_encoder,
                           test_fraction=cfg.test_fraction, seed=cfg.seed)
    return official_data(data, captions_per_image=cfg.captions_per_image, encoder=cfg.sentence_encoder,
                         test_fraction=cfg.test_fraction)


def resolved(cfg: Config) -> Config:
    """`cfg` with `model.in_dim` set to the width of its label embedder's node features; an explicit width that
    differs is an error."""
    width = label_embedder(cfg.data.label_embedder).dim
    if cfg.model.in_dim not in (0, width):
        raise LowlabelError(
            f"model.in_dim={cfg.model.in_dim}, but label embedder '{cfg.data.label_embedder}' gives {width}-d node "
            f"features; set model.in_dim=0 (or {width})"
        )
    return replace(cfg, model=replace(cfg.model, in_dim=width))


def build_model(cfg: Config) -> GraphEmbedding:
    """The GraphEmbedding of `cfg` (node-feature width: `resolved`)."""
    m = resolved(cfg).model
    return GraphEmbedding(in_dim=m.in_dim, hidden=m.hidden, layers=m.layers, conv=m.conv,
                          gin_mlp_hidden=m.gin_mlp_hidden, official_padding=m.official_padding)


def model_spec(cfg: Config) -> index.ModelSpec:
    """What the exported model.pt records to rebuild the model of `cfg` without its config."""
    m = resolved(cfg).model
    return index.ModelSpec(m.in_dim, m.hidden, m.layers, m.conv, m.gin_mlp_hidden, m.official_padding,
                           cfg.data.label_embedder)


def step_fn(model: torch.nn.Module, batch: tuple[GraphBatch, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
    """One IRSGS step: embed [anchors; partners] in one forward, MSE of their dot products to rel(anchor, partner)."""
    graphs, target = batch
    z = model(*graphs)
    half = target.shape[0]
    return {"mse": relevance_mse(pair_scores(z[:half], z[half:]), target)}


def node_table(packed: PackedGraphs, embedder: str, device: torch.device) -> torch.Tensor:
    """(V + 1, D) node features of the packed graphs' vocabulary; non-finite features (a GloVe file with NaN or
    Inf) are an error naming the embedder."""
    table = packed.label_table(label_embedder(embedder))
    if not bool(torch.isfinite(table).all()):
        raise LowlabelError(f"label embedder '{embedder}' gives NaN or Inf node features; fix the word vectors")
    return table.to(device)


def heldout_scorer(bundle: RetrievalData, table: torch.Tensor, vocab: list[str], cfg: DataConfig
                ) -> Callable[[torch.nn.Module], dict[str, float]]:
    """model -> metrics of retrieval on the test split against the surrogate relevance: nDCG@{5,10,20} (IRSGS
    discount) ranking the whole test split (queries: the first `cfg.eval_queries` test images, 0 = all), and, when
    the data has them, the official protocol's re-ranking of ResNet top-`cfg.first_stage_pool` pools
    (`pool_ndcg@k`) and the agreement with the human triplets whose three images are test images."""
    test_ids = bundle.test.tolist()
    test = PackedGraphs([bundle.graphs[i] for i in test_ids], vocab=vocab)
    rel = bundle.relevance[bundle.test][:, bundle.test]
    first_stage = bundle.first_stage[bundle.test] if bundle.first_stage is not None else None
    triplets = votes = None
    if bundle.triplets is not None and bundle.votes is not None:
        position = {g: k for k, g in enumerate(test_ids)}
        keep = [k for k, t in enumerate(bundle.triplets.tolist()) if all(i in position for i in t)]
        triplets = torch.tensor([[position[i] for i in bundle.triplets[k].tolist()] for k in keep],
                                dtype=torch.long).reshape(-1, 3)
        votes = bundle.votes[keep]

    def score(model: torch.nn.Module) -> dict[str, float]:
        z = index.embed_graphs(model, test, table).cpu()
        out = ranking_metrics(z, rel, queries=cfg.eval_queries, first_stage=first_stage,
                              pool_size=cfg.first_stage_pool)
        if triplets is not None and votes is not None and bool(((votes[:, 0] + votes[:, 1]) >= 2).any()):
            out["human_agreement"] = human_agreement(z, triplets, votes, first_stage, cfg.first_stage_pool)
            out["human_triplets"] = float(len(triplets))
        return out

    return score


def fit(cfg: Config, bundle: RetrievalData, runtime: Runtime, run_dir: Path | None, resume: bool = False
        ) -> tuple[GraphEmbedding, torch.Tensor, dict]:
    """Train on the train split; returns the model, the node-feature table and the trainer summary."""
    packed = PackedGraphs(bundle.graphs)
    table = node_table(packed, cfg.data.label_embedder, runtime.device)
    train_graphs = PackedGraphs([bundle.graphs[i] for i in bundle.train.tolist()], vocab=packed.vocab)
    rel_train = bundle.relevance[bundle.train][:, bundle.train]
    batches = PairBatches(train_graphs, table, rel_train, cfg.data.batch_size, runtime,
                          tail_range=cfg.data.tail_range, seed=cfg.train.seed)
    model = build_model(cfg)
    score = heldout_scorer(bundle, table, packed.vocab, cfg.data)

    def eval_fn(m: torch.nn.Module, step: int) -> dict[str, float]:
        return {f"surrogate_{key}": value for key, value in score(m).items()}

    trainer = Trainer(model, step_fn, config=cfg.train, optim=cfg.optim, runtime=runtime, run_dir=run_dir,
                      eval_fn=eval_fn)
    summary = trainer.fit(batches, resume=resume)
    summary["eval"] = trainer.evaluate()
    return model, table, summary


def image_of(bundle: RetrievalData, item: int) -> tuple[np.ndarray | None, str]:
    """Graph `item`'s image (the shapes-world render, else `<image_id>.<ext>` in the data's image folder, else None)
    and a caption: its id and first node labels. An image file that exists but does not decode is an error."""
    graph = bundle.graphs[item]
    caption = f"{graph.image_id}: {', '.join(graph.node_labels[:10])}"
    if bundle.scenes is not None:
        return bundle.scenes[item].image, caption
    if bundle.images is not None:
        for ext in IMAGE_EXTS:
            path = bundle.images / f"{graph.image_id}{ext}"
            if path.is_file():
                return read_image(path), caption
    return None, caption


def draw_retrieval(model: torch.nn.Module, bundle: RetrievalData, table: torch.Tensor, vocab: list[str],
                   path: Path) -> Path:
    """`path` (PNG): the first test image and its top-5 test images by the model's scores."""
    test = bundle.test.tolist()
    z = index.embed_graphs(model, PackedGraphs([bundle.graphs[i] for i in test], vocab=vocab), table).cpu()
    scores = z @ z.T
    matches = top_matches(scores, 0)
    rel = bundle.relevance
    titles = ["query"] + [f"score {scores[0, j]:.2f}  rel {rel[test[0], test[j]]:.2f}" for j in matches]
    return retrieval_figure(0, matches, lambda j: image_of(bundle, test[j]), titles, path,
                            "IRSGS: a test query and its top-5 test images (rel = surrogate relevance)")


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """Train IRSGS on the shapes world (data None) or a user's dataset (`sources.data_files`); writes
    run_dir/model.pt, run_dir/retrieval.png (a test query's top-5), summary.json with the final test metrics and the
    config with the resolved node-feature width (run_dir/config.yaml)."""
    cfg = resolved(cfg)
    if runtime.is_main:
        save_config(cfg, run_dir / "config.yaml")
    bundle = load_data(cfg.data, data)
    model, table, summary = fit(cfg, bundle, runtime, run_dir, resume)
    summary = {**summary, "relevance_encoder": bundle.encoder, "model_file": str(run_dir / "model.pt")}
    if runtime.is_main:
        index.export_model(model, model_spec(cfg), run_dir / "model.pt")
        draw_retrieval(model, bundle, table, PackedGraphs(bundle.graphs).vocab, run_dir / "retrieval.png")
        write_json(run_dir / "summary.json", summary)  # the trainer's summary plus the final test metrics
    return summary


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """Retrieval on the test split against the surrogate relevance (`heldout_scorer`: nDCG@{5,10,20} ranking the whole
    test split, plus the ResNet-pool and human-agreement numbers when the data has those files); `checkpoint` is an
    exported model.pt (it names its own architecture and label embedder) or a trainer checkpoint of a run with this
    config."""
    payload = ckpt.load(checkpoint, map_location="cpu")
    if isinstance(payload, dict) and "spec" in payload:
        model, spec = index.load_model(checkpoint, runtime.device)
        embedder = spec.label_embedder
    else:
        model = load_model(build_model, cfg, checkpoint, runtime.device)
        embedder = cfg.data.label_embedder
    bundle = load_data(cfg.data, data)
    packed = PackedGraphs(bundle.graphs)
    table = node_table(packed, embedder, runtime.device)
    return heldout_scorer(bundle, table, packed.vocab, cfg.data)(model)


def smoke_case(runtime: Runtime) -> SmokeCase:
    """A 16-d, 2-layer IRSGS-GCN and one batch of 4 pairs over 6 tiny shapes-style graphs (random word features)."""
    def graph(i: int, objs: list, rels: list) -> SceneGraph:
        objects = [{"shape": s, "colour": c, "size": "small"} for s, c in objs]
        return shapes_graph({"objects": objects, "relations": rels}, str(i))

    graphs = [
        graph(i, objs, rels)
        for i, (objs, rels) in enumerate([
            ([("circle", "red")], []),
            ([("square", "blue"), ("star", "red")], [[0, "left-of", 1]]),
            ([("heart", "green"), ("circle", "red")], [[1, "above", 0], [0, "near", 1]]),
            ([("triangle", "pink")], []),
            ([("star", "red"), ("square", "blue"), ("cross", "cyan")], [[2, "bigger-than", 0]]),
            ([("diamond", "orange"), ("heart", "green")], [[0, "below", 1]]),
        ])
    ]  # fmt: skip
    cfg = Config(model=ModelConfig(hidden=16, layers=2), data=DataConfig(label_embedder="random:16", tail_range=3))
    packed = PackedGraphs(graphs)
    table = node_table(packed, cfg.data.label_embedder, runtime.device)
    rel = torch.rand(6, 6, generator=torch.Generator().manual_seed(0))
    batches = PairBatches(packed, table, (rel + rel.T) / 2, 4, runtime, tail_range=cfg.data.tail_range)
    batch = next(iter(batches.epoch(0)))
    return SmokeCase(model=build_model(cfg).to(runtime.device), step_fn=step_fn, batch=batch)


__all__ = ["Config", "DataConfig", "ModelConfig", "build_model", "evaluate", "fit", "load_data", "smoke_case", "train"]
