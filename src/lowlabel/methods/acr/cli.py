"""`lowlabel acr ...`: semi-supervised transfer on a user's images (train, eval, predict).

No torch import at module level: the commands import what they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from lowlabel.commands import ConfigFile, Device, Force, Out, Resume, SetOption, Threads, set_threads
from lowlabel.errors import LowlabelError

console = Console()
app = typer.Typer(help="ACR: semi-supervised transfer learning with AKC and ARC (train, eval, predict).",
                  no_args_is_help=True)


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Dataset root (<root>/{train,test}/<class>/; see --dataset); none: the shapes world.")] = None,
    dataset: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="folders | cub200 | indoor67 | omniglot (zip archives) (config: dataset, folders).")] = None,
    source: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Source model: torchvision-format ResNet/MobileNetV2 file or 'imagenet-mobilenet_v2' (config: source).")
    ] = None,
    labelled_per_class: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Labelled images per class, official seeded split (config: labelled_per_class, 5).")] = None,
    labelled_list: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="File of labelled image keys ('class/file.jpg' per line) instead of the split.")] = None,
    ssl: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="none | fixmatch | ict: consistency term under AKC/ARC (config: ssl, none).")] = None,
    lambda_akc: Annotated[Optional[float], typer.Option(  # noqa: UP045
        help="AKC weight, 0 = off (config: lambda_akc, 1).")] = None,
    lambda_arc: Annotated[Optional[float], typer.Option(  # noqa: UP045
        help="ARC weight, 0 = off; lower it for small feature maps (config: lambda_arc, 50).")] = None,
    image_size: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Crop size; images are resized to size*256/224 first (config: image_size, 224).")] = None,
    iterations: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Training steps (config: train.max_steps, 10000).")] = None,
    out: Out = Path("runs"),
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = None,
    force: Force = False,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Fine-tune a source model on few labelled + many unlabelled images; prints the run folder and test accuracy."""
    import json

    from lowlabel.engine import rundir
    from lowlabel.methods.acr import recipe

    resize = None if image_size is None else round(image_size * 256 / 224)
    options = {"dataset": dataset, "source": source, "labelled_per_class": labelled_per_class,
               "labelled_list": None if labelled_list is None else str(labelled_list), "ssl": ssl,
               "lambda_akc": lambda_akc, "lambda_arc": lambda_arc, "image_size": image_size, "resize": resize,
               "train.max_steps": iterations}
    summary, run = rundir.train_run(recipe, "acr", out=out, data=data, resume=resume, force=force, config=config,
                                    overrides=set_ or [], options=options, device=device, threads=threads,
                                    check=recipe.check)
    if run.main:
        console.print(f"run folder: {run.dir}")
        console.print_json(json.dumps({k: v for k, v in summary.items() if k != "config"}, default=str))


def _run_config(run: Path) -> object:
    """The config a run trained with, architecture and classes filled in (`resolved.yaml` of the run)."""
    from lowlabel.engine.config import load_config
    from lowlabel.methods.acr import recipe

    resolved = run / "resolved.yaml"
    if not resolved.is_file():
        raise LowlabelError(f"{run}: no resolved.yaml; give the folder of a finished `lowlabel acr train` run")
    return load_config(recipe.Config, resolved)


def _checkpoint(run: Path) -> Path:
    from lowlabel.engine.checkpoint import newest_checkpoint

    found = newest_checkpoint(run)
    if found is None:
        raise LowlabelError(f"{run}: no checkpoint; give the folder of a `lowlabel acr train` run")
    return found


@app.command("eval")
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder written by `lowlabel acr train`.")],
    data: Annotated[Optional[Path], typer.Option(help="Dataset root as for training; none: the shapes world.")] = None,  # noqa: UP045
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Test accuracy of the run's newest checkpoint (EMA teacher when the run had one)."""
    from lowlabel.engine import runtime as rt
    from lowlabel.methods.acr import recipe

    set_threads(threads)
    cfg = _run_config(run)
    metrics = recipe.evaluate(cfg, checkpoint=_checkpoint(run), data=data, runtime=rt.init(device))
    console.print(f"accuracy {metrics['accuracy']:.4f}")


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder written by `lowlabel acr train`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files (jpg/png/...) to classify.")],
    out: Annotated[Path, typer.Option(help="CSV file: image, class index, class name, probability.")] = Path(
        "acr_predictions.csv"),
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Classify images with the run's newest checkpoint (test view: resize, centre crop)."""
    import csv

    import numpy as np
    import torch

    from lowlabel.data.io import read_image
    from lowlabel.engine import runtime as rt
    from lowlabel.engine.recipe import load_model
    from lowlabel.files import atomic_path
    from lowlabel.methods.acr import augment, recipe
    from lowlabel.methods.acr.data import center_crop, resize_short

    set_threads(threads)
    if not images:
        raise LowlabelError("give at least one image file")
    cfg = _run_config(run)
    device_ = rt.init(device).device
    model = load_model(recipe.build_model, cfg, _checkpoint(run), device_)
    classes = (run / "classes.txt").read_text().splitlines() if (run / "classes.txt").is_file() else []
    arrays = [center_crop(resize_short(read_image(p), cfg.resize), cfg.resize) for p in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        probs = model.classify(augment.center(x, cfg.image_size).to(device_)).softmax(1).cpu()
    with atomic_path(out) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "class", "name", "probability"])
        for path, p in zip(images, probs, strict=True):
            c = int(p.argmax())
            writer.writerow([str(path), c, classes[c] if c < len(classes) else "", f"{float(p[c]):.4f}"])
    console.print(f"wrote {out} ({len(images)} images)")
