"""Option types shared by every `train`-like command, so each method's CLI declares them the same way.

No torch import: the main CLI imports every method's cli module at start-up. The work behind the options is
`lowlabel.engine.rundir.open_run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Device = Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")]
Threads = Annotated[int, typer.Option(help="CPU threads for torch (0: torch's default).")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML config file.")]  # noqa: UP045
SetOption = Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
    "--set", help="Override a config key: --set a.b=c (repeat); wins over every other source.")]
Out = Annotated[Path, typer.Option(help="Root folder of runs (a run goes to OUT/<slug>/<timestamp>).")]
Resume = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    help="Run folder to continue from its newest checkpoint (its config.yaml and recorded --data are reused).")]
Force = Annotated[bool, typer.Option(help="With --resume: accept --data that differs from the run's recorded data.")]


def set_threads(threads: int) -> None:
    """Apply `--threads` (imports torch, so call it inside a command)."""
    from lowlabel.engine.runtime import set_threads as apply

    apply(threads)
