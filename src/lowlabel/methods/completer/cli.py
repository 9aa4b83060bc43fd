"""`lowlabel completer ...`: cluster an official multi-view .mat file over mask seeds and missing rates.
Arguments and printing only; no torch import at module level (the main CLI imports this module)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lowlabel.errors import LowlabelError

app = typer.Typer(help="COMPLETER: incomplete multi-view clustering.", no_args_is_help=True)
console = Console()


@app.callback()
def main() -> None:
    """COMPLETER: incomplete multi-view clustering (Lin et al., CVPR 2021)."""


def parse_rates(text: str) -> list[float]:
    """'0.1,0.3' -> [0.1, 0.3]; each rate must lie in [0, 1)."""
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LowlabelError(f"--missing-rate '{text}' must be numbers separated by commas, e.g. 0.1,0.3,0.5") from None
    if not rates or any(not 0.0 <= r < 1.0 for r in rates):
        raise LowlabelError(f"--missing-rate '{text}': every rate must lie in [0, 1)")
    return rates


@app.command()
def cluster(
    file: Annotated[Path, typer.Argument(help="Official .mat file (Scene-15, LandUse-21, Caltech101-20, NoisyMNIST).")],
    missing_rate: Annotated[str, typer.Option(help="Missing rate(s) in [0, 1), comma-separated: a sweep.")] = "0.5",
    seeds: Annotated[int, typer.Option(help="Mask seeds 1..N per rate (the paper uses 5).")] = 5,
    epochs: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Training epochs [config: train.epochs, 500].")] = None,
    layout: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Layout if the file name does not tell it [config: data.layout].")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML config file.")] = None,  # noqa: UP045
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key a.b=c.")] = None,  # noqa: UP045
    out: Annotated[Path, typer.Option(help="Root folder of runs.")] = Path("runs"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: torch's default).")] = 0,
) -> None:
    """Train COMPLETER once per (missing rate, mask seed) and print ACC/NMI/ARI mean ± std over seeds."""
    rates = parse_rates(missing_rate)
    if seeds < 1 or (epochs is not None and epochs < 1):
        raise LowlabelError("--seeds and --epochs must be at least 1")
    import torch

    from lowlabel.engine import rundir
    from lowlabel.engine import runtime as rt
    from lowlabel.engine.config import load_config
    from lowlabel.methods.completer.recipe import Config
    from lowlabel.methods.completer.sweep import cluster_file

    cfg = load_config(Config, config, set_ or [], options={"train.epochs": epochs, "data.layout": layout})
    if threads > 0:
        torch.set_num_threads(threads)
    runtime = rt.init(device)
    run_dir = rundir.new_run_dir(out, "completer")
    summary = cluster_file(file, rates=rates, seeds=seeds, cfg=cfg, run_dir=run_dir, runtime=runtime,
                           log=console.print)
    length = f"{cfg.train.max_steps} steps" if cfg.train.max_steps else f"{cfg.train.epochs} epochs"
    table = Table(title=f"COMPLETER on {file.name} ({seeds} mask seed(s), {length})")
    for column in ("missing rate", "ACC", "NMI", "ARI"):
        table.add_column(column, justify="right")
    for row in summary["rates"]:
        table.add_row(f"{row['missing_rate']:g}", *(f"{100 * row[m]:.2f} ± {100 * row[m + '_std']:.2f}"
                                                   for m in ("acc", "nmi", "ari")))
    console.print(table)
    console.print(f"run folder: {run_dir}")
