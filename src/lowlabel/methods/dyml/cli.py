"""`lowlabel dyml ...`: per-scale retrieval metrics of your own embeddings, embeddings of your images from a
checkpoint, and CSL against the baselines on your data over several seeds.

No torch import at module level: the commands import what they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lowlabel.commands import Device, Threads, set_threads
from lowlabel.errors import LowlabelError
from lowlabel.files import atomic_path, write_json

console = Console()
app = typer.Typer(help="DyML: one embedding for several semantic scales (metrics, embed, compare).",
                  no_args_is_help=True)

LEVEL_NAMES = ("fine", "middle", "coarse")


def _table(title: str, metrics: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    keys = list(next(iter(metrics.values())))
    table.add_column("level")
    for key in keys:
        table.add_column(key, justify="right")
    for level, values in metrics.items():
        table.add_row(level, *(f"{values[k]:.4f}" for k in keys))
    return table


def _load_array(path: Path, what: str, *, labels: bool = False) -> object:
    """A numeric array from .npy or comma-separated text; finite values, and whole numbers when `labels` (int64)."""
    import numpy as np

    if not path.is_file():
        raise LowlabelError(f"{path}: {what} file not found")
    try:
        array = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, delimiter=",", ndmin=2)
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as err:
        raise LowlabelError(f"{path}: not a readable .npy or comma-separated text file ({err})") from None
    if array.dtype.kind not in "biuf" or array.size == 0:
        raise LowlabelError(f"{path}: {what} must be a non-empty numeric array, got {array.dtype} {array.shape}")
    if not np.isfinite(array).all():
        raise LowlabelError(f"{path}: {what} hold NaN or inf values")
    if labels:
        if (array != np.round(array)).any():
            raise LowlabelError(f"{path}: {what} must be integer class ids, found non-integer values")
        return array.astype(np.int64)
    return array.astype(np.float32)


@app.command()
def metrics(
    embeddings: Annotated[Path, typer.Argument(help="(N, D) embeddings: .npy or comma-separated text.")],
    labels: Annotated[Path, typer.Argument(help="(N, L) integer labels, fine first: .npy or comma-separated text.")],
    queries: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Separate query embeddings (.npy/.csv); default: every row queries the others.")] = None,
    query_labels: Annotated[Optional[Path], typer.Option(help="Labels of --queries (Q, L).")] = None,  # noqa: UP045
    backend: Annotated[str, typer.Option(help="torch (exact, chunked) or faiss (exact flat index).")] = "torch",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics here.")] = None,  # noqa: UP045
    threads: Threads = 0,
) -> None:
    """mAP, ASI and R@1/10/20 at every label level (columns fine, middle, coarse, ...) and their mean, as DyML
    reports them; queries with no relevant gallery item are skipped."""
    import numpy as np
    import torch

    from lowlabel.methods.dyml.evaluation import retrieval_per_scale

    set_threads(threads)
    if (queries is None) != (query_labels is None):
        raise LowlabelError("give --queries and --query-labels together")
    emb = np.asarray(_load_array(embeddings, "embeddings"))
    lab = np.asarray(_load_array(labels, "labels", labels=True))
    if lab.ndim == 1:
        lab = lab[:, None]
    if emb.ndim != 2 or lab.shape[0] != emb.shape[0]:
        raise LowlabelError(f"{embeddings} {emb.shape} and {labels} {lab.shape}: need (N, D) embeddings and (N, L) "
                            "labels with the same N")
    q = ql = None
    if queries is not None:
        q = torch.from_numpy(np.asarray(_load_array(queries, "query embeddings")))
        ql = torch.from_numpy(np.asarray(_load_array(query_labels, "query labels", labels=True)))  # type: ignore[arg-type]
        ql = ql[:, None] if ql.dim() == 1 else ql
        if q.dim() != 2 or q.shape[1] != emb.shape[1] or tuple(ql.shape) != (q.shape[0], lab.shape[1]):
            raise LowlabelError(f"{queries} {tuple(q.shape)} and {query_labels} {tuple(ql.shape)}: need (Q, "
                                f"{emb.shape[1]}) query embeddings and (Q, {lab.shape[1]}) query labels")
    levels = tuple(LEVEL_NAMES[i] if i < 3 else f"level{i}" for i in range(lab.shape[1]))
    result = retrieval_per_scale(torch.from_numpy(emb.astype(np.float32)), torch.from_numpy(lab.astype(np.int64)),
                                 query_emb=q, query_labels=ql, levels=levels, backend=backend)
    console.print(_table(f"dyml metrics: {embeddings.name}", result))
    if json_out is not None:
        write_json(json_out, result)
        console.print(f"wrote {json_out}")


@app.command()
def embed(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `lowlabel train dyml`.")],
    csv_file: Annotated[Path, typer.Argument(help="CSV of 'path, fine, middle, coarse' rows (labels: any text).")],
    out: Annotated[Path, typer.Option(help="Where to write the (N, dim) float32 embeddings (.npy).")] = Path(
        "embeddings.npy"),
    config: Annotated[Optional[Path], typer.Option(help="Config (default: the run's config.yaml).")] = None,  # noqa: UP045
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Embed the images of a CSV with a trained model (test transform); writes .npy embeddings and, beside them,
    <out>_labels.npy with the CSV's labels as ids per level (then `lowlabel dyml metrics` scores them)."""
    import numpy as np

    from lowlabel.engine import config as cfg_mod
    from lowlabel.engine import runtime as rt
    from lowlabel.engine.recipe import load_model
    from lowlabel.methods.dyml import recipe
    from lowlabel.methods.dyml.batches import FileImages, embed_images
    from lowlabel.methods.dyml.data import read_hierarchy_csv

    set_threads(threads)
    run_config = checkpoint.resolve().parent.parent / "config.yaml"
    cfg = cfg_mod.load_config(recipe.Config, config or (run_config if run_config.is_file() else None))
    runtime = rt.init(device)
    model = load_model(recipe.build_model, cfg, checkpoint, runtime.device)
    files = read_hierarchy_csv(csv_file)
    d = cfg.data
    images = FileImages(files, d.test_resize, grey=cfg.model.in_channels == 1)
    emb = embed_images(model, images, size=d.image_size, resize=d.test_resize, mean=d.mean, std=d.std,
                       batch_size=d.eval_batch, num_workers=d.num_workers, device=runtime.device)
    labels_out = out.with_name(out.stem + "_labels.npy")
    for path, array in ((out, emb.numpy()), (labels_out, files.labels)):
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)
    console.print(f"wrote {out} {tuple(emb.shape)} and {labels_out}")


@app.command()
def compare(
    data: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="DyML folder, hierarchy CSV or Omniglot zip(s)/folder; none: the built-in world.")] = None,
    seeds: Annotated[Optional[list[int]], typer.Option("--seed", help="Seeds (repeat); default 0 1 2.")] = None,  # noqa: UP045
    losses: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--loss", help="csl, fine_only, level_sum (repeat; a baseline's kind after a colon, e.g. "
        "level_sum:multi_similarity); default the first three.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the runs.")] = Path("runs/dyml_compare"),
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write per-seed and mean metrics here.")] = None,  # noqa: UP045
    config: Annotated[Optional[Path], typer.Option(help="YAML config for every run.")] = None,  # noqa: UP045
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key a.b=c.")] = None,  # noqa: UP045
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Train CSL and the baselines with one config on one data set for several seeds (train.seed = seed; the
    open-set split stays data.split_seed) and print per-level mAP and ASI, mean ± std over seeds."""
    from lowlabel.methods.dyml.compare import compare_losses

    set_threads(threads)
    result = compare_losses(data=data, seeds=tuple(seeds or (0, 1, 2)),
                            losses=tuple(losses or ("csl", "fine_only", "level_sum")), out=out, config=config,
                            overrides=set_ or [], device=device)
    table = Table(title=f"dyml compare: {data or 'built-in world'}")
    columns = [f"{lv}_{k}" for lv in ("fine", "middle", "coarse", "overall") for k in ("map", "asi")]
    table.add_column("loss")
    for c in columns:
        table.add_column(c, justify="right")
    for loss, row in result["mean"].items():
        table.add_row(loss, *(f"{row[c]:.3f}±{row.get(c + '_std', 0):.3f}" for c in columns))
    console.print(table)
    if json_out is not None:
        write_json(json_out, result)
        console.print(f"wrote {json_out}")
