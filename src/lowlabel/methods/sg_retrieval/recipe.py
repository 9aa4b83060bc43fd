"""IRSGS recipe: config with the official defaults, data loading (shapes world or official files), train, evaluate."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from lowlabel.engine import schedules
from lowlabel.engine.demo import DemoResult, SmokeCase
from lowlabel.engine.runtime import Runtime
from lowlabel.engine.trainer import TrainConfig, Trainer
from lowlabel.errors import LowlabelError
from lowlabel.methods.sg_retrieval import data as sgdata
from lowlabel.methods.sg_retrieval.evaluation import full_ndcg
from lowlabel.methods.sg_retrieval.graphs import GraphBatch, PackedGraphs, SceneGraph, shapes_graph
from lowlabel.methods.sg_retrieval.index import ModelSpec, embed_graphs, export_model, load_model
from lowlabel.methods.sg_retrieval.losses import caption_relevance, pair_scores, relevance_mse
from lowlabel.methods.sg_retrieval.model import GraphEmbedding
from lowlabel.nn.text import RandomWordEmbeddings, label_embedder, sentence_encoder


@dataclass
class ModelConfig:
    conv: str = "gcn"  # "gcn" (IRSGS-GCN) or "gin" (IRSGS-GIN)
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
    tail_range: int = 100
    eval_queries: int = 1000
    seed: int = 0


@dataclass
class OptimConfig:
    lr: float = 1e-4
    gamma: float = 0.9  # ExponentialLR factor, once per epoch
    batch_size: int = 32  # pairs per step
    epochs: int = 25


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # max_steps = 0: optim.epochs passes over the training anchors
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=0, log_every=50, checkpoint_every=500))


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
    n_test = max(1, round(n * test_fraction))
    if n - n_test < 2:
        raise LowlabelError(f"{n} images are too few to split off {n_test} test images; add data")
    return torch.arange(n - n_test), torch.arange(n - n_test, n)


def shapes_data(cfg: DataConfig) -> RetrievalData:
    """Shapes-world scenes: ground-truth scene graphs, 5 templated captions each, relevance from `sentence_encoder`."""
    from lowlabel.data.synth.shapes import ShapesConfig, ShapesDataset

    world = ShapesDataset(cfg.n_scenes, seed=cfg.seed, cfg=ShapesConfig(n_captions=cfg.captions_per_image))
    scenes = [world.scene(i) for i in range(cfg.n_scenes)]
    graphs = [shapes_graph(s.scene_graph(), str(i)) for i, s in enumerate(scenes)]
    texts = [c for s in scenes for c in s.captions]
    owner = torch.arange(len(scenes)).repeat_interleave(torch.tensor([len(s.captions) for s in scenes]))
    emb = sentence_encoder(cfg.sentence_encoder).encode(texts)
    rel = caption_relevance(emb, owner, n_images=len(scenes), captions_per_image=cfg.captions_per_image)
    train, test = _split(len(scenes), cfg.test_fraction)
    return RetrievalData(graphs, rel, train, test, cfg.sentence_encoder, scenes)


def official_data(root: Path, cfg: DataConfig) -> RetrievalData:
    """A folder with graphs (scene_graphs.json or *.pkl), captions (captions.json: COCO or Karpathy) or relevance
    (*_sbert_mean.npy + *_sbert_img_id.npy), and optionally split.json {image_id: "train" | "test"}."""
    root = Path(root)
    if not root.is_dir():
        raise LowlabelError(f"--data {root} is not a folder")
    graph_files = [root / "scene_graphs.json"] if (root / "scene_graphs.json").is_file() else sorted(root.glob("*.pkl"))
    if not graph_files:
        raise LowlabelError(f"{root} holds no scene_graphs.json and no *.pkl graph file")
    graphs = sgdata.read_graphs(graph_files[0])
    ids = [g.image_id for g in graphs]
    rel_files = sorted(root.glob("*_sbert_mean.npy"))
    if rel_files:
        rel_all, rel_ids = sgdata.read_relevance(rel_files[0], str(rel_files[0]).replace("_mean.npy", "_img_id.npy"))
        where = {r: i for i, r in enumerate(rel_ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise LowlabelError(f"{rel_files[0]} has no row for images {', '.join(missing[:5])}")
        pos = torch.tensor([where[i] for i in ids])
        rel, encoder = rel_all[pos][:, pos], f"precomputed:{rel_files[0].name}"
    elif (root / "captions.json").is_file():
        texts, owner = sgdata.caption_arrays(sgdata.read_captions(root / "captions.json"), ids)
        emb = sentence_encoder(cfg.sentence_encoder).encode(texts)
        rel = caption_relevance(emb, owner, n_images=len(ids), captions_per_image=cfg.captions_per_image)
        encoder = cfg.sentence_encoder
    else:
        raise LowlabelError(f"{root} holds neither captions.json nor *_sbert_mean.npy: one defines the training target")
    if (root / "split.json").is_file():
        split = sgdata.load_json(root / "split.json")
        train = torch.tensor([i for i, g in enumerate(ids) if split.get(g) == "train"], dtype=torch.long)
        test = torch.tensor([i for i, g in enumerate(ids) if split.get(g) == "test"], dtype=torch.long)
        if len(train) < 2 or len(test) < 1:
            raise LowlabelError(
                f"{root / 'split.json'} leaves {len(train)} train / {len(test)} test images that have graphs"
            )
    else:
        train, test = _split(len(ids), cfg.test_fraction)
    return RetrievalData(graphs, rel, train, test, encoder)


def load_data(cfg: Config, data: Path | None) -> RetrievalData:
    return shapes_data(cfg.data) if data is None else official_data(data, cfg.data)


def build_model(cfg: ModelConfig, in_dim: int) -> GraphEmbedding:
    return GraphEmbedding(in_dim=in_dim, hidden=cfg.hidden, layers=cfg.layers, conv=cfg.conv,
                          gin_mlp_hidden=cfg.gin_mlp_hidden, official_padding=cfg.official_padding)


def step_fn(model: torch.nn.Module, batch: tuple[GraphBatch, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
    """One IRSGS step: embed [anchors; partners] in one forward, MSE of their dot products to rel(anchor, partner)."""
    graphs, target = batch
    z = model(*graphs)
    half = target.shape[0]
    return {"mse": relevance_mse(pair_scores(z[:half], z[half:]), target)}


def fit(cfg: Config, bundle: RetrievalData, runtime: Runtime, run_dir: Path | None, resume: bool = False
        ) -> tuple[GraphEmbedding, ModelSpec, torch.Tensor, dict]:
    """Train on the train split; returns the model, its spec, the node-feature table and the trainer summary."""
    packed = PackedGraphs(bundle.graphs)
    table = packed.label_table(label_embedder(cfg.data.label_embedder)).to(runtime.device)
    train_graphs = PackedGraphs([bundle.graphs[i] for i in bundle.train.tolist()], vocab=packed.vocab)
    rel_train = bundle.relevance[bundle.train][:, bundle.train]
    batches = sgdata.PairBatches(train_graphs, table, rel_train, cfg.optim.batch_size, runtime,
                                 tail_range=cfg.data.tail_range, seed=cfg.train.seed)
    per_epoch = batches.steps_per_epoch
    tc = cfg.train
    if tc.max_steps <= 0:
        tc = TrainConfig(**{**tc.__dict__, "max_steps": cfg.optim.epochs * per_epoch})
    model = build_model(cfg.model, table.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    sched = schedules.lr_scheduler(opt, lambda s: cfg.optim.gamma ** (s // per_epoch))
    test_graphs = PackedGraphs([bundle.graphs[i] for i in bundle.test.tolist()], vocab=packed.vocab)
    rel_test = bundle.relevance[bundle.test][:, bundle.test].to(runtime.device)
    n_q = min(cfg.data.eval_queries, len(bundle.test))

    def eval_fn(m: torch.nn.Module, step: int) -> dict[str, float]:
        z = embed_graphs(m, test_graphs, table)
        scores = (z[:n_q] @ z.T)[:, :n_q]
        return {f"surrogate_ndcg@{k}": full_ndcg(scores, rel_test[:n_q, :n_q], k) for k in (5, 10, 20)}

    trainer = Trainer(model, opt, step_fn, config=tc, runtime=runtime, run_dir=run_dir, scheduler=sched,
                      eval_fn=eval_fn)
    summary = trainer.fit(batches, resume=resume)
    summary["eval"] = trainer.evaluate()
    spec = ModelSpec(table.shape[1], cfg.model.hidden, cfg.model.layers, cfg.model.conv, cfg.model.gin_mlp_hidden,
                     cfg.model.official_padding, cfg.data.label_embedder)
    return model, spec, table, summary


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """Train IRSGS on the shapes world (data None) or an official-format folder; writes run_dir/model.pt."""
    bundle = load_data(cfg, data)
    model, spec, _, summary = fit(cfg, bundle, runtime, run_dir, resume)
    if runtime.is_main:
        export_model(model, spec, run_dir / "model.pt")
    return {**summary, "relevance_encoder": bundle.encoder, "model_file": str(run_dir / "model.pt")}


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """nDCG@{5,10,20} (IRSGS discount) of full-database ranking on the test split against the surrogate relevance;
    `checkpoint` is an exported model.pt or a trainer checkpoint of a run with this config."""
    bundle = load_data(cfg, data)
    packed = PackedGraphs(bundle.graphs)
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True) if Path(checkpoint).is_file() else None
    if isinstance(payload, dict) and "spec" in payload:
        model, spec = load_model(checkpoint, runtime.device)
        table = packed.label_table(label_embedder(spec.label_embedder)).to(runtime.device)
    elif isinstance(payload, dict) and "model" in payload:
        table = packed.label_table(label_embedder(cfg.data.label_embedder)).to(runtime.device)
        model = build_model(cfg.model, table.shape[1])
        model.load_state_dict(payload["model"])
        model = model.to(runtime.device)
    else:
        raise LowlabelError(f"{checkpoint} is neither an exported model.pt nor a trainer checkpoint")
    test = PackedGraphs([bundle.graphs[i] for i in bundle.test.tolist()], vocab=packed.vocab)
    z = embed_graphs(model, test, table)
    rel = bundle.relevance[bundle.test][:, bundle.test].to(z.device)
    n_q = min(cfg.data.eval_queries, len(bundle.test))
    scores = (z[:n_q] @ z.T)[:, :n_q]
    return {f"ndcg@{k}": full_ndcg(scores, rel[:n_q, :n_q], k) for k in (5, 10, 20)}


def demo(*, quick: bool, out: Path, runtime: Runtime) -> DemoResult:
    """Shapes-world demo against the world's judge (see `demo.run_demo`)."""
    from lowlabel.methods.sg_retrieval.demo import run_demo

    return run_demo(quick=quick, out=out, runtime=runtime)


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
    packed = PackedGraphs(graphs)
    table = packed.label_table(RandomWordEmbeddings(16)).to(runtime.device)
    rel = torch.rand(6, 6, generator=torch.Generator().manual_seed(0))
    batches = sgdata.PairBatches(packed, table, (rel + rel.T) / 2, 4, runtime, tail_range=3)
    batch = next(iter(batches.epoch(0)))
    model = GraphEmbedding(in_dim=16, hidden=16, layers=2).to(runtime.device)
    return SmokeCase(model=model, step_fn=step_fn, batch=batch)


__all__ = ["Config", "DataConfig", "ModelConfig", "OptimConfig", "demo", "evaluate", "smoke_case", "train"]
