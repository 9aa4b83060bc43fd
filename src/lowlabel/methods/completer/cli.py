"""`lowlabel completer ...`: cluster a multi-view .mat file (official or your own) over mask seeds and missing rates.
Arguments and printing only; no torch import at module level (the main CLI imports this module)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lowlabel.commands import ConfigFile, Device, Force, Out, Resume, SetOption, Threads
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


def parse_views(text: str) -> list[int]:
    """'0,2' -> [0, 2]: 0-based cells of X."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LowlabelError(f"--views '{text}' must be cell indexes of X separated by commas, e.g. 0,2") from None


@app.command()
def cluster(
    file: Annotated[Optional[Path], typer.Argument(  # noqa: UP045
        help="A .mat file: an official one (Scene-15, LandUse-21, Caltech101-20, NoisyMNIST) or your own (key X: "
             "a 1xV cell of (n, d_v) matrices, optional Y: labels). Optional with --resume.")] = None,
    missing_rate: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Missing rate(s) in [0, 1), comma-separated: a sweep (config: sweep.missing_rates, 0.5).")] = None,
    seeds: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Mask seeds 1..N per rate (config: sweep.seeds, 5 as the paper).")] = None,
    n_clusters: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="K; needed when the file has no labels (config: data.n_clusters, 0 = number of labels).")] = None,
    views: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Cells of X to use, 0-based, e.g. 0,2 (config: data.views; default: the layout's, generic: all).")] = None,
    epochs: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Training epochs (config: train.epochs, 500).")] = None,
    layout: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="scene15, landuse21, caltech101_20, noisymnist or generic (config: data.layout; default: from the "
             "file's name, else its keys).")] = None,
    config: ConfigFile = None,
    set_: SetOption = None,
    out: Out = Path("runs"),
    resume: Resume = None,
    force: Force = False,
    device: Device = "auto",
    threads: Threads = 0,
) -> None:
    """Train COMPLETER once per (missing rate, mask seed), write every sample's cluster, and print ACC/NMI/ARI
    mean ± std over seeds when the file has labels."""
    if file is None and resume is None:
        raise LowlabelError("give the .mat file to cluster (or --resume RUN_DIR to continue a run)")
    if epochs is not None and epochs < 1:
        raise LowlabelError(f"--epochs {epochs} must be at least 1")
    from lowlabel.engine import rundir
    from lowlabel.methods.completer.recipe import Config, check_config
    from lowlabel.methods.completer.sweep import METRICS, cluster_file

    options = {"sweep.missing_rates": parse_rates(missing_rate) if missing_rate is not None else None,
               "sweep.seeds": seeds, "data.n_clusters": n_clusters, "train.epochs": epochs, "data.layout": layout,
               "data.views": parse_views(views) if views is not None else None}
    cfg, run, runtime = rundir.open_run(Config, "completer", out=out, data=file, resume=resume, force=force,
                                        config=config, overrides=set_ or [], options=options, device=device,
                                        threads=threads, check=check_config)
    if run.data is None:
        raise LowlabelError(f"{run.dir} records no data file: pass the .mat file with --force")
    with rundir.removed_on_error(run):
        summary = cluster_file(run.data, cfg=cfg, run_dir=run.dir, runtime=runtime, resume=run.resumed,
                               log=console.print)
    length = f"{cfg.train.max_steps} steps" if cfg.train.max_steps else f"{cfg.train.epochs} epochs"
    if summary["scored"]:
        table = Table(title=f"COMPLETER on {run.data.name} ({cfg.sweep.seeds} mask seed(s), {length})")
        for column in ("missing rate", "ACC", "NMI", "ARI"):
            table.add_column(column, justify="right")
        for row in summary["rates"]:
            table.add_row(f"{row['missing_rate']:g}", *(f"{100 * row[m]:.2f} ± {100 * row[m + '_std']:.2f}"
                                                       for m in METRICS))
        console.print(table)
    else:
        console.print(f"{run.data.name} has no labels: no scores; each run's clusters are in its assignments.csv")
    console.print(f"run folder: {run.dir}")
