"""`lowlabel dtc ...`: train on the LA layout, segment volumes into NIfTI/HDF5 masks, evaluate with per-case metrics.

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
app = typer.Typer(help="DTC: semi-supervised 3D segmentation (train, segment, eval).", no_args_is_help=True)


def _config(config: Path | None, overrides: list[str]) -> object:
    from lowlabel.engine.config import load_config
    from lowlabel.methods.dtc.recipe import Config

    return load_config(Config, config, overrides)


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(help="LA layout root (train.list/test.list); none: volumes world.")] = None,  # noqa: UP045, E501
    labelled: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="The first N cases of train.list are labelled (config: labelled, 16).")] = None,
    scale: Annotated[Optional[float], typer.Option(  # noqa: UP045
        help="Resample volumes by this factor; patch and stride follow (config: scale, 1).")] = None,
    iterations: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Training steps; lr milestones and ramp keep their shape (config: train.max_steps, 6000).")] = None,
    n_filters: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="V-Net base width (config: n_filters, 16).")] = None,
    supervised: Annotated[bool, typer.Option(
        help="Baseline: same V-Net and DTC's supervised loss (Dice + beta L_LSF), labelled cases only.")] = False,
    out: Out = Path("runs"),
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = None,
    force: Force = False,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Train DTC (or --supervised) and evaluate the last iteration on test.list; prints the run folder."""
    import json

    from lowlabel.engine import rundir
    from lowlabel.methods.dtc import recipe

    options = {"labelled": labelled, "scale": scale, "n_filters": n_filters, "train.max_steps": iterations}
    if supervised:
        options.update({"unlabelled_bs": 0, "consistency": 0.0})
    cfg, run, runtime = rundir.open_run(recipe.Config, "dtc", out=out, data=data, resume=resume, force=force,
                                        config=config, overrides=set_ or [], options=options, device=device,
                                        threads=threads)
    with rundir.removed_on_error(run):
        summary = recipe.train(cfg, data=run.data, run_dir=run.dir, runtime=runtime, resume=run.resumed)
    console.print(f"run folder: {run.dir}")
    console.print_json(json.dumps({k: v for k, v in summary.items() if k != "test_cases"}, default=str))


def _run_config(model: Path, config: Path | None) -> object:
    run_config = model.resolve().parent.parent / "config.yaml"
    return _config(config or (run_config if run_config.is_file() else None), [])


@app.command()
def segment(
    model: Annotated[Path, typer.Argument(help="Checkpoint written by `lowlabel dtc train`.")],
    volumes: Annotated[list[Path], typer.Argument(help="Volumes to segment (.h5 with 'image', .nii, .nii.gz).")],
    out: Annotated[Path, typer.Option(help="Folder for the predicted masks.")] = Path("dtc_masks"),
    fmt: Annotated[str, typer.Option("--format", help="nifti or h5.")] = "nifti",
    config: Annotated[Optional[Path], typer.Option(help="Config (default: the run's config.yaml).")] = None,  # noqa: UP045
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Segment volumes with the sliding window; writes <name>_mask.nii.gz (or .h5 with 'label' and 'prob')."""
    from lowlabel.data.io import write_h5, write_nifti
    from lowlabel.engine import runtime as rt
    from lowlabel.engine.recipe import load_model
    from lowlabel.methods.dtc import recipe
    from lowlabel.methods.dtc.data import read_volume, volume_stem
    from lowlabel.methods.dtc.inference import segment_volume

    if fmt not in ("nifti", "h5"):
        raise LowlabelError(f"--format {fmt}: use nifti or h5")
    set_threads(threads)
    cfg = _run_config(model, config)
    net = load_model(recipe.build_model, cfg, model, rt.init(device).device)
    for path in volumes:
        image, spacing = read_volume(path)
        mask, prob = segment_volume(net, image, patch=recipe.effective_patch(cfg), stride=recipe.effective_stride(cfg),
                                    scale=cfg.scale, threshold=cfg.threshold, keep_largest=cfg.keep_largest,
                                    batch_size=cfg.infer_batch)
        target = out / f"{volume_stem(path)}_mask{'.nii.gz' if fmt == 'nifti' else '.h5'}"
        try:  # the writers are atomic; a full disk or an unwritable --out still raises OSError
            if fmt == "nifti":
                write_nifti(target, mask, spacing)
            else:
                write_h5(target, label=mask, prob=prob.astype("float32"))
        except OSError as err:
            raise LowlabelError(f"could not write {target}: {err.strerror or err}") from None
        console.print(f"{path} -> {target} ({int(mask.sum())} foreground voxels)")


@app.command("eval")
def evaluate(
    model: Annotated[Path, typer.Argument(help="Checkpoint written by `lowlabel dtc train`.")],
    data: Annotated[Optional[Path], typer.Option(help="LA layout root; none: the volumes world.")] = None,  # noqa: UP045
    config: Annotated[Optional[Path], typer.Option(help="Config (default: the run's config.yaml).")] = None,  # noqa: UP045
    overlay: Annotated[Optional[str], typer.Option(help="Case id: write <out>/<case>_overlay.png.")] = None,  # noqa: UP045
    out: Annotated[Path, typer.Option(help="Folder for the overlay PNG.")] = Path("."),
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Per-case and mean Dice / Jaccard / 95HD / ASD (voxels) of a checkpoint on test.list."""
    from lowlabel.engine import runtime as rt
    from lowlabel.engine.recipe import load_model
    from lowlabel.methods.dtc import recipe
    from lowlabel.methods.dtc.plots import overlay_png

    set_threads(threads)
    cfg = _run_config(model, config)
    net = load_model(recipe.build_model, cfg, model, rt.init(device).device)
    cases = recipe.load_split(cfg, data, "test", 1.0)
    rows = recipe.evaluate_cases(net, cfg, cases)
    table = Table(title=f"dtc: {model}")
    for column in ("case", "dice", "jaccard", "hd95", "asd"):
        table.add_column(column, justify="right")
    for row in [*rows, {"case": "mean", **recipe.mean_metrics(rows)}]:
        table.add_row(row["case"], *(f"{row[k]:.4f}" for k in ("dice", "jaccard", "hd95", "asd")))
    console.print(table)
    if overlay is not None:
        chosen = [c for c in cases if c.name == overlay]
        if not chosen:
            raise LowlabelError(f"--overlay {overlay}: not a test case; choose one of {[c.name for c in cases][:5]}...")
        target = out / f"{overlay}_overlay.png"
        try:  # lowlabel.files.atomic_path lets NotADirectoryError through when a parent of --out is a file
            overlay_png(net, cfg, chosen[0], target)
        except OSError as err:
            raise LowlabelError(f"could not write {target}: {err.strerror or err}") from None
        console.print(f"wrote {target}")
