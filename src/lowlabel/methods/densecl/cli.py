"""`lowlabel densecl ...`: DenseCL's own commands (no torch import at module level)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="DenseCL: export a pretrained backbone for detection/segmentation libraries.",
                  no_args_is_help=True)


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
