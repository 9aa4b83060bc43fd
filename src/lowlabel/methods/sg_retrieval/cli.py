"""`lowlabel sgr index|query`: a faiss index of IRSGS graph embeddings and queries against it (no torch import here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lowlabel.errors import LowlabelError

app = typer.Typer(help="IRSGS scene-graph retrieval: index graph embeddings, query by graph or image id.",
                  no_args_is_help=True)
console = Console()


@app.command("index")
def index_cmd(
    graphs: Annotated[Path, typer.Argument(help="Scene graphs: VG scene_graphs.json or the official .pkl layout.")],
    model: Annotated[Path, typer.Option(help="model.pt written by `lowlabel train sg_retrieval`.")],
    out: Annotated[Path, typer.Option(help="Index folder to write (index.faiss, ids.json, meta.json).")],
    batch_size: Annotated[int, typer.Option(help="Graphs per forward pass.")] = 512,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "cpu",
) -> None:
    """Embed every graph with a trained IRSGS model and write a faiss inner-product index."""
    from dataclasses import asdict

    from lowlabel.engine.runtime import select_device
    from lowlabel.methods.sg_retrieval import data, index

    records = data.read_graphs(graphs)
    ids = [g.image_id for g in records]
    if len(set(ids)) != len(ids):
        raise LowlabelError(f"{graphs}: image ids repeat; every graph needs its own id to be retrievable")
    net, spec = index.load_model(model, select_device(device))
    emb = index.embed_records(net, spec, records, batch_size)
    meta = {"model": str(model.resolve()), "graphs": str(graphs.resolve()), "count": len(ids), "spec": asdict(spec)}
    index.build_index(emb, ids, out, meta)
    console.print(f"indexed {len(ids)} graphs ({emb.shape[1]}-d) into {out}")


def _query_vector(graph: Path, model: Path):  # -> np.ndarray
    from lowlabel.methods.sg_retrieval import data, index

    if graph.suffix == ".json":
        payload = data.load_json(graph)
        records = payload if isinstance(payload, list) else [payload]
        graphs = [data.vg_record_graph(r, str(graph)) for r in records]
    else:
        graphs = data.read_graphs(graph)
    if len(graphs) != 1:
        raise LowlabelError(f"--graph {graph} holds {len(graphs)} graphs; pass a file with exactly one")
    net, spec = index.load_model(model)
    return index.embed_records(net, spec, graphs)[0].cpu().numpy()


@app.command("query")
def query_cmd(
    index_dir: Annotated[Path, typer.Argument(metavar="INDEX", help="Folder written by `lowlabel sgr index`.")],
    graph: Annotated[Optional[Path], typer.Option(help="Query scene graph: one VG record (.json) or .pkl.")] = None,  # noqa: UP045
    image_id: Annotated[Optional[str], typer.Option(help="Query by an indexed image id.")] = None,  # noqa: UP045
    k: Annotated[int, typer.Option("-k", "--k", help="How many results.")] = 10,
    candidates: Annotated[Optional[Path], typer.Option(help="Re-rank only these ids (one per line or a JSON list), as in the official 100-candidate protocol.")] = None,  # noqa: UP045, E501
    model: Annotated[Optional[Path], typer.Option(help="Model for --graph (default: the one the index was built with).")] = None,  # noqa: UP045, E501
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Top-k most similar indexed images to a graph or an indexed image (whole database, or a candidate list)."""
    from lowlabel.methods.sg_retrieval.index import GraphIndex

    if (graph is None) == (image_id is None):
        raise LowlabelError("pass exactly one of --graph FILE or --image-id ID")
    if k < 1:
        raise LowlabelError(f"-k {k}: ask for at least one result")
    idx = GraphIndex(index_dir)
    if image_id is not None:
        vector, exclude = idx.vector(image_id), image_id
    else:
        vector, exclude = _query_vector(graph, model or Path(idx.meta["model"])), None
    if candidates is not None:
        if not candidates.is_file():
            raise LowlabelError(f"--candidates {candidates} does not exist")
        text = candidates.read_text()
        ids = [str(c) for c in json.loads(text)] if text.lstrip().startswith("[") else text.split()
        hits = idx.rerank(vector, [c for c in ids if c != exclude])[:k]
    else:
        hits = idx.search(vector, k, exclude=exclude)
    if as_json:
        console.print_json(json.dumps([{"image_id": i, "score": s} for i, s in hits]))
        return
    table = Table(title=f"top {len(hits)} of {len(idx.ids)} indexed images")
    for column in ("rank", "image id", "score"):
        table.add_column(column)
    for rank, (image, score) in enumerate(hits, 1):
        table.add_row(str(rank), image, f"{score:.4f}")
    console.print(table)
