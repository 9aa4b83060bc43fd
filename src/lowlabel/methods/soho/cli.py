"""`lowlabel soho ...`: pre-train on image-caption pairs, evaluate image-text retrieval, rank images for a text.

No torch import at module level: the commands import what they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lowlabel.commands import ConfigFile, Device, Force, Out, Resume, SetOption, Threads, set_threads
from lowlabel.errors import LowlabelError

console = Console()
app = typer.Typer(help="SOHO: vision-language pre-training with a visual dictionary (train, eval, rank).",
                  no_args_is_help=True)

Config = Annotated[Optional[Path], typer.Option(help="YAML config (default: the run's config.yaml).")]  # noqa: UP045


def _run_config(model: Path, config: Path | None, overrides: dict | None = None) -> object:
    from lowlabel.engine.config import load_config
    from lowlabel.methods.soho.recipe import Config as SOHOConfig

    if not model.is_file():
        raise LowlabelError(f"{model}: checkpoint not found; give a file written by `lowlabel soho train`")
    run_config = model.resolve().parent.parent / "config.yaml"
    chosen = config or (run_config if run_config.is_file() else None)
    return load_config(SOHOConfig, chosen, [], options=overrides or {})


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="COCO captions .json or .csv of (image path, caption); none: the shapes world.")] = None,
    image_dir: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Images folder of a COCO .json (config: data.image_dir; default: the official layout).")] = None,
    iterations: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Optimiser steps; lr milestones keep their shape (config: train.max_steps; default 40 epochs).")] = None,
    backbone: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="resnet18 | resnet50 | mobilenet_v2 (config: model.backbone, resnet18).")] = None,
    text_init: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="'' random, 'minilm' or a BERT safetensors file (config: model.text_init).")] = None,
    no_dictionary: Annotated[bool, typer.Option(help="Ablation: no Visual Dictionary, no MVM.")] = False,
    out: Out = Path("runs"),
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = None,
    force: Force = False,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Pre-train SOHO (MLM + MVM + ITM) on image-caption pairs; prints the run folder and the summary."""
    import json

    from lowlabel.engine import rundir
    from lowlabel.methods.soho import recipe

    if data is not None and not data.is_file():
        raise LowlabelError(f"--data {data}: file not found; give a COCO captions .json or a .csv")
    options = {"data.image_dir": image_dir, "train.max_steps": iterations, "model.backbone": backbone,
               "model.text_init": text_init, "model.use_dictionary": False if no_dictionary else None}
    summary, run = rundir.train_run(recipe, "soho", out=out, data=data, resume=resume, force=force, config=config,
                                    overrides=set_ or [], options=options, device=device, threads=threads)
    if run.main:
        console.print(f"run folder: {run.dir}")
        console.print_json(json.dumps(summary, default=str))


@app.command("eval")
def evaluate(
    model: Annotated[Path, typer.Argument(help="Checkpoint written by `lowlabel soho train`.")],
    data: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="COCO captions .json or .csv to retrieve in; none: the shapes world's test split.")] = None,
    captions: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Use the first N captions of each image (0: all) (config: eval_captions).")] = None,
    config: Config = None,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Image-text retrieval R@1/5/10 (%) both ways, ranking every pair by the ITM match probability."""
    from lowlabel.engine import runtime as rt
    from lowlabel.methods.soho import recipe

    set_threads(threads)
    if data is not None and not data.is_file():
        raise LowlabelError(f"--data {data}: file not found; give a COCO captions .json or a .csv")
    cfg = _run_config(model, config, {"eval_captions": captions})
    metrics = recipe.evaluate(cfg, checkpoint=model, data=data, runtime=rt.init(device))
    table = Table(title=f"soho retrieval: {model}")
    table.add_column("direction")
    for k in (1, 5, 10):
        table.add_column(f"R@{k}", justify="right")
    for label, key in (("image -> text (TR)", "tr"), ("text -> image (IR)", "ir")):
        table.add_row(label, *(f"{metrics[f'{key}_r{k}']:.1f}" if f"{key}_r{k}" in metrics else "-"
                               for k in (1, 5, 10)))
    console.print(table)


@app.command()
def rank(
    model: Annotated[Path, typer.Argument(help="Checkpoint written by `lowlabel soho train`.")],
    query: Annotated[str, typer.Argument(help="The text to find images for.")],
    data: Annotated[Path, typer.Option(help="COCO captions .json or .csv whose images are ranked.")],
    top: Annotated[int, typer.Option(help="How many images to print.")] = 5,
    config: Config = None,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Rank the images of a caption file for a text query by the ITM match probability."""
    from lowlabel.engine import runtime as rt
    from lowlabel.engine.recipe import load_model
    from lowlabel.methods.soho import recipe
    from lowlabel.methods.soho.data import WordPieceTokenizer, load_image, prepare_image, read_pairs
    from lowlabel.methods.soho.retrieval import score_pairs

    set_threads(threads)
    if top < 1:
        raise LowlabelError(f"--top {top}: must be at least 1")
    if not query.strip():
        raise LowlabelError("the query is empty; give a sentence describing the image")
    cfg = _run_config(model, config)
    runtime = rt.init(device)
    net = load_model(recipe.build_model, cfg, model, runtime.device)
    pairs = read_pairs(data, cfg.data.image_dir or None)
    images = [prepare_image(load_image(p.image), cfg.data.scale) for p in pairs]
    ids, attention = WordPieceTokenizer(cfg.data.max_length)([query])
    scores = score_pairs(net, images, ids, attention, batch=cfg.eval_batch, divisor=cfg.data.size_divisor,
                         device=runtime.device)[:, 0]
    order = scores.argsort(descending=True)[:top].tolist()
    table = Table(title=f"'{query}'")
    for column in ("rank", "match probability", "image"):
        table.add_column(column)
    for r, i in enumerate(order, 1):
        table.add_row(str(r), f"{float(scores[i]):.3f}", str(pairs[i].image))
    console.print(table)
