"""`lowlabel fdrl ...`: train on an expression dataset, evaluate a checkpoint, predict expressions with the per-branch
weights, align raw photos.

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
from lowlabel.files import atomic_path

console = Console()
app = typer.Typer(help="FDRL: facial expression recognition (train, eval, predict, align).", no_args_is_help=True)


def _run_config(checkpoint: Path, config: Path | None) -> object:
    from lowlabel.engine.config import load_config
    from lowlabel.methods.fdrl.recipe import Config

    if not checkpoint.is_file():
        raise LowlabelError(f"{checkpoint}: checkpoint not found; give a file written by `lowlabel fdrl train`")
    run_config = checkpoint.resolve().parent.parent / "config.yaml"
    config = config or (run_config if run_config.is_file() else None)
    if config is None:
        raise LowlabelError(f"no config.yaml beside {checkpoint} (expected {run_config}); pass --config")
    return load_config(Config, config, [])


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Dataset folder: RAF-DB basic (EmoLabel/, Image/), train.csv + test.csv (path,label), or train/<class>/ "
             "+ test/<class>/ (FER2013's split prefixes are checked); none: the faces world.")] = None,
    backbone: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="resnet18, mobilenet_v2 or dlib (frozen dlib face embedding) (config: backbone, resnet18).")] = None,
    pretrained: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="'imagenet' (mobilenet_v2) or a torchvision-layout ResNet-18 .pth (config: pretrained, none).")] = None,
    head: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="fdrl, or a baseline: linear, centre (linear + centre loss), mlp (FDRL head's depth and size) "
             "(config: head, fdrl).")] = None,
    epochs: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Epochs; the lr milestones keep their shape (config: train.epochs, 40).")] = None,
    image_size: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Network input side in pixels (config: image_size, 224).")] = None,
    per_class: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Train on a fixed subset of N images per class (config: train_per_class, 0 = all).")] = None,
    align: Annotated[Optional[bool], typer.Option(  # noqa: UP045
        help="Detect and align faces with dlib first, cached (config: align, off).")] = None,
    out: Out = Path("runs"),
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = None,
    force: Force = False,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Train backbone + FDRL head (or a baseline head), then report test accuracy of the last epoch; prints the run
    folder (config.yaml, metrics.jsonl, checkpoints/, summary.json, confusion.png, branch_weights.png)."""
    import json

    from lowlabel.engine import rundir
    from lowlabel.methods.fdrl import recipe

    options = {"backbone": backbone, "pretrained": pretrained, "head": head, "train.epochs": epochs,
               "image_size": image_size, "train_per_class": per_class, "align": align}
    summary, run = rundir.train_run(recipe, "fdrl", out=out, data=data, resume=resume, force=force, config=config,
                                    overrides=set_ or [], options=options, device=device, threads=threads,
                                    check=recipe.check_config)
    if run.main:
        console.print(f"run folder: {run.dir}")
        shown = {k: v for k, v in summary.items() if k != "test"}
        shown["test"] = {k: summary["test"][k] for k in ("accuracy", "balanced_accuracy")}
        console.print_json(json.dumps(shown, default=str))


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `lowlabel fdrl train`.")],
    data: Annotated[Optional[Path], typer.Option(help="Dataset folder; none: the faces world.")] = None,  # noqa: UP045
    config: ConfigFile = None,
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Folder for confusion.png and branch_weights.png.")] = None,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Accuracy, balanced accuracy and per-class recall of a checkpoint on the test split."""
    from lowlabel.engine import runtime as rt
    from lowlabel.engine.recipe import load_model
    from lowlabel.methods.fdrl import recipe
    from lowlabel.methods.fdrl.plots import confusion_png, weights_png

    set_threads(threads)
    cfg = _run_config(checkpoint, config)
    model = load_model(recipe.build_model, cfg, checkpoint, rt.init(device).device)
    result = recipe.scores(model, recipe.load_split(cfg, data, "test"), cfg.eval_batch)
    table = Table(title=f"fdrl: {checkpoint}")
    for column in ("class", "images", "recall"):
        table.add_column(column, justify="right")
    for name, row in zip(result["classes"], result["confusion"], strict=True):
        table.add_row(name, str(sum(row)), f"{row[result['classes'].index(name)] / max(sum(row), 1):.4f}")
    console.print(table)
    console.print(f"accuracy {result['accuracy']:.4f}, balanced accuracy {result['balanced_accuracy']:.4f}")
    if out is not None:
        console.print(f"wrote {confusion_png(result['confusion'], result['classes'], out / 'confusion.png')}")
        if "mean_weights" in result:
            console.print(f"wrote {weights_png(result['mean_weights'], result['classes'], out / 'branch_weights.png')}")


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `lowlabel fdrl train`.")],
    images: Annotated[list[Path], typer.Argument(help="Face images (aligned crops, or raw photos with --align).")],
    config: ConfigFile = None,
    out: Annotated[Path, typer.Option(help="CSV: path, expression, probability, branch weights.")] = Path(
        "fdrl_predictions.csv"),
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Predict the expression of each image; the CSV also holds the FDRL head's normalised per-branch weights."""
    import csv

    from lowlabel.engine import runtime as rt
    from lowlabel.engine.recipe import load_model
    from lowlabel.methods.fdrl import recipe

    set_threads(threads)
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise LowlabelError(f"{missing[0]}: image not found ({len(missing)} of {len(images)} missing)")
    cfg = _run_config(checkpoint, config)
    model = load_model(recipe.build_model, cfg, checkpoint, rt.init(device).device)
    probs, weights = recipe.predict_files(cfg, model, images)
    classes = list(cfg.classes) or [str(k) for k in range(cfg.num_classes)]
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        m = weights.shape[1] if weights is not None else 0
        writer.writerow(["path", "expression", "probability", *(f"weight_l{j + 1}" for j in range(m))])
        for i, path in enumerate(images):
            k = int(probs[i].argmax())
            extra = [f"{float(v):.5f}" for v in weights[i]] if weights is not None else []
            writer.writerow([str(path), classes[k], f"{float(probs[i, k]):.5f}", *extra])
    console.print(f"wrote {out} ({len(images)} images)")


@app.command()
def align(
    photos: Annotated[list[Path], typer.Argument(help="Raw photos with one face each.")],
    out: Annotated[Path, typer.Option(help="Folder for the aligned crops (the cache).")] = Path("fdrl_aligned"),
    size: Annotated[int, typer.Option(help="Side of the aligned crop in pixels.")] = 224,
    on_missing: Annotated[str, typer.Option(help="No face found: error, skip or keep (whole photo).")] = "error",
) -> None:
    """Detect, align and crop faces with dlib's offline detector (the [face] extra); prints photo -> crop."""
    from lowlabel.methods.fdrl.align import FaceAligner, align_files

    crops = align_files(photos, out, aligner=FaceAligner(size=size), on_missing=on_missing)
    for photo, crop in zip(photos, crops, strict=True):
        console.print(f"{photo} -> {crop if crop is not None else 'no face (skipped)'}")
