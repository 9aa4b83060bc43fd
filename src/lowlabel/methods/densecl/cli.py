"""`lowlabel densecl ...`: DenseCL's own commands (no torch import at module level)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lowlabel.commands import ConfigFile, Device, SetOption, Threads, set_threads

app = typer.Typer(help="DenseCL: fine-tuning evaluation of a pretrained backbone; export for detection/segmentation "
                  "libraries.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """DenseCL commands."""


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run folder of `lowlabel train densecl` (or a checkpoint file).")],
    format_: Annotated[str, typer.Option("--format", help="torchvision or detectron2 key names.")] = "torchvision",
    out: Annotated[Path, typer.Option(help="Output file: .safetensors, .pth, or .pkl (detectron2).")] = Path(
        "densecl_backbone.pth"),
) -> None:
    """Write the query encoder's backbone of the newest checkpoint with torchvision or detectron2 key names."""
    from lowlabel.methods.densecl.export import export_run

    path = export_run(run_dir, format_, out)
    typer.echo(f"wrote {path} ({format_} keys)")


@app.command()
def finetune(
    checkpoint: Annotated[Path, typer.Option(help="Run folder of `lowlabel train densecl` (newest checkpoint) or a "
                                                  "checkpoint file; DenseCL or MoCo-v2 mode (loss_lambda=0).")],
    random_init: Annotated[bool, typer.Option(help="Start from the checkpoint's network freshly initialised "
                                                   "instead (the random-init baseline).")] = False,
    data: Annotated[Optional[Path], typer.Option(help="COCO-style root (annotations/instances_<split>.json, "  # noqa: UP045
                                                      "<split>/ images); none: the shapes world.")] = None,
    train_split: Annotated[str, typer.Option(help="COCO split to fine-tune on.")] = "train2017",
    test_split: Annotated[str, typer.Option(help="COCO split to measure mIoU on.")] = "val2017",
    labelled: Annotated[int, typer.Option(help="Fine-tune on the first N labelled images.")] = 16,
    size: Annotated[int, typer.Option(help="Image side (shorter side resized, centre crop).")] = 64,
    steps: Annotated[Optional[int], typer.Option(help="Fine-tuning steps (config: steps).")] = None,  # noqa: UP045
    lr: Annotated[Optional[float], typer.Option(help="SGD learning rate (config: lr).")] = None,  # noqa: UP045
    seed: Annotated[int, typer.Option(help="Seed of the head's init and the batch order; shapes worlds "
                                           "10000+seed (fine-tune) and 20000+seed (test).")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Also write the result as JSON here.")] = None,  # noqa: UP045
    config: ConfigFile = None,
    set_: SetOption = None,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Fine-tune the whole backbone with a light FCN head on N labelled images; print the held-out mIoU."""
    import json

    from lowlabel.engine import runtime as rt
    from lowlabel.engine.config import load_config
    from lowlabel.files import write_json
    from lowlabel.methods.densecl.data import coco_labelled, finetune_worlds
    from lowlabel.methods.densecl.finetune import FinetuneConfig, finetune_miou, start_backbone

    set_threads(threads)
    cfg = load_config(FinetuneConfig, config, set_ or [], options={"steps": steps, "lr": lr, "seed": seed})
    if data is None:
        train_set, test_set = finetune_worlds(seed, size=size, n_train=labelled)
    else:
        train_set, _ = coco_labelled(data / "annotations" / f"instances_{train_split}.json", data / train_split,
                                     size=size)
        test_set, _ = coco_labelled(data / "annotations" / f"instances_{test_split}.json", data / test_split,
                                    size=size)
    backbone, start = start_backbone(checkpoint, random_init=random_init, seed=seed)
    miou = finetune_miou(backbone, train_set.first(labelled), test_set, cfg=cfg, runtime=rt.init(device, seed=seed))
    result = {"start": start, "checkpoint": str(checkpoint), "data": str(data) if data else "shapes world",
              "labelled": labelled, "test_images": len(test_set.images), "size": size, "miou": miou,
              "finetune": vars(cfg)}
    if out is not None:
        write_json(out, result)
    typer.echo(json.dumps(result))
