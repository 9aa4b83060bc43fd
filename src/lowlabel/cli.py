"""The `lowlabel` command: list, demo, train, eval, data preview, and one sub-command group per method that has
a job of its own. Importing this module must not import torch: heavy imports happen inside the commands."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lowlabel import extras, registry
from lowlabel.commands import ConfigFile, Device, Force, Out, Resume, SetOption, Threads
from lowlabel.errors import LowlabelError

if TYPE_CHECKING:
    from lowlabel.engine.demo import DemoResult

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="lowlabel",
    help="Eleven 2021 vision methods for learning with few or no labels: demos, training, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Synthetic worlds with exact ground truth.", no_args_is_help=True)
app.add_typer(data_app, name="data")



@app.command("list")
def list_methods() -> None:
    """List the eleven methods and their state (ready or planned)."""
    table = Table(title="lowlabel methods")
    for column in ("slug", "method", "paper", "task", "state"):
        table.add_column(column)
    for m in registry.METHODS.values():
        table.add_row(m.slug, m.title, m.paper, m.task, "[green]ready" if m.ready else "[yellow]planned")
    console.print(table)


def _cell(row: dict[str, float], metric: str) -> str:
    """'0.8633' or, where the row holds `<metric>_std` (a mean over seeds), '0.8633 ± 0.0230'."""
    if metric not in row:
        return ""
    std = row.get(f"{metric}_std")
    return f"{row[metric]:.4f}" if std is None else f"{row[metric]:.4f} ± {std:.4f}"


def _print_demo(result: DemoResult) -> None:
    metrics = [m for m in next(iter(result.rows.values())) if not m.endswith("_std")]
    table = Table(title=f"{result.slug}: demo ({result.seconds:.0f} s)")
    table.add_column("model")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for name, row in result.rows.items():
        mark = " (method)" if name == result.method else " (baseline)" if name == result.baseline else ""
        table.add_row(name + mark, *(_cell(row, m) for m in metrics))
    console.print(table)
    for note in result.notes:
        console.print(f"  {note}")
    console.print(result.verdict)


@app.command()
def demo(
    slugs: Annotated[Optional[list[str]], typer.Argument(help="Methods to demo (default: every ready one).")] = None,  # noqa: UP045
    quick: Annotated[bool, typer.Option(help="Smaller, faster demo (what `make demo` runs).")] = False,
    out: Annotated[Path, typer.Option(help="Folder for demo outputs and report.html.")] = Path("runs/demo"),
    device: Device = "auto",
) -> None:
    """Train each method on built-in data, print its metric beside a named baseline, and write one HTML page with
    every method's table and figures (OUT/report.html)."""
    import time

    methods = [registry.get(s) for s in slugs] if slugs else registry.ready()
    if not methods:
        console.print("No method is ready yet: `lowlabel list` shows the plan.")
        return
    demos = [m.demo() for m in methods]  # planned methods fail here, before any work
    for m in methods:
        extras.check(m.extras, f"the {m.slug} demo")
    from lowlabel.engine import runtime as rt
    from lowlabel.files import write_json
    from lowlabel.report.html import demo_report

    runtime = rt.init(device)
    broken, results = [], []
    start = time.perf_counter()
    for number, (method, demo_module) in enumerate(zip(methods, demos, strict=True), 1):
        console.rule(f"[{number}/{len(methods)}] {method.title} ({method.slug}), "
                     f"{time.perf_counter() - start:.0f} s so far")
        result = demo_module.run(quick=quick, out=out / method.slug, runtime=runtime)
        write_json(out / method.slug / "demo.json", result.to_json())
        _print_demo(result)
        results.append((result.to_json(), demo_module.figures(out / method.slug)))
        if not result.works:
            broken.append(method.slug)
    page = demo_report(results, out / "report.html", quick=quick)
    console.print(f"{len(methods)} demo(s) in {time.perf_counter() - start:.0f} s; report: {page}")
    if broken:  # losing to the strongest baseline is a finding; not beating the floor is a bug
        err_console.print(f"below their floor (random or trivial reference): {', '.join(broken)}")
        raise typer.Exit(1)


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (runs/<slug>/<timestamp>), one or several.")],
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
) -> None:
    """One self-contained HTML page for run folders: config (or its diff), loss curves, evaluation over training,
    final metrics (mean ± std when the runs are seeds of one setting) and each method's figures."""
    from lowlabel.report.html import run_report

    console.print(f"wrote {run_report(runs, out)}")


@app.command()
def train(
    slug: Annotated[str, typer.Argument(help="Method slug (see `lowlabel list`).")],
    config: ConfigFile = None,
    set_: SetOption = None,
    data: Annotated[Optional[Path], typer.Option(help="Dataset path in the official format.")] = None,  # noqa: UP045
    out: Out = Path("runs"),
    resume: Resume = None,
    force: Force = False,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Train a method; the run folder gets run.json, config.yaml, metrics.jsonl, checkpoints/ and summary.json."""
    method = registry.get(slug)
    recipe = method.recipe()
    extras.check(method.extras, f"training {slug}")
    from lowlabel.engine import rundir

    summary, run = rundir.train_run(recipe, method.slug, out=out, data=data, resume=resume, force=force,
                                    config=config, overrides=set_ or [], device=device, threads=threads)
    if run.main:  # train_run has left the process group, so rank() says 0 everywhere now
        console.print(f"run folder: {run.dir}")
        console.print_json(json.dumps(summary, default=str))


@app.command("eval")
def evaluate(
    slug: Annotated[str, typer.Argument(help="Method slug.")],
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint (.pt) written by `lowlabel train`.")],
    data: Annotated[Optional[Path], typer.Option(help="Dataset path in the official format.")] = None,  # noqa: UP045
    config: Annotated[Optional[Path], typer.Option(help="YAML config (default: the run's config.yaml).")] = None,  # noqa: UP045
    set_: SetOption = None,
    device: Device = "auto",
) -> None:
    """Evaluate a trained checkpoint and print the method's metrics (default data: the one the run trained on)."""
    method = registry.get(slug)
    recipe = method.recipe()
    from lowlabel.engine import config as cfg_mod
    from lowlabel.engine import runtime as rt
    from lowlabel.engine.rundir import recorded_data

    # the run folder holds config.yaml and run.json; checkpoints sit in it (model.pt) or in its checkpoints/
    runs = [p for p in checkpoint.resolve().parents[:2] if (p / "config.yaml").is_file()]
    cfg = cfg_mod.load_config(recipe.Config, config or (runs[0] / "config.yaml" if runs else None), set_ or [])
    if data is None and runs:
        data = recorded_data(runs[0], method.slug)[1]  # the data the run trained on (None: the built-in world)
    runtime = rt.init(device, seed=cfg.train.seed)
    metrics = recipe.evaluate(cfg, checkpoint=checkpoint, data=data, runtime=runtime)
    table = Table(title=f"{slug}: evaluation of {checkpoint}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


@data_app.command("preview")
def data_preview(
    world: Annotated[str, typer.Argument(help="shapes, faces, volumes, multiview or geometry.")],
    n: Annotated[int, typer.Option(help="How many samples.")] = 16,
    out: Annotated[Optional[Path], typer.Option(help="PNG file to write.")] = None,  # noqa: UP045
    seed: Annotated[int, typer.Option(help="World seed.")] = 0,
) -> None:
    """Write a labelled PNG grid of a synthetic world."""
    from lowlabel.data import synth

    if n < 1:
        raise LowlabelError("--n must be at least 1")
    path = synth.preview(world, n=n, out=out or Path(f"{world}_preview.png"), seed=seed)
    console.print(f"wrote {path}")


def _register_method_commands() -> None:
    """Mount each method's own sub-commands (`lowlabel <cli_name> ...`) as soon as its cli module exists: they do
    real work on the user's files; `demo`/`train`/`eval` still refuse a planned method."""
    for method in registry.METHODS.values():
        if importlib.util.find_spec(f"lowlabel.methods.{method.slug}") is None:  # the method package is not written yet
            continue
        module_name = f"lowlabel.methods.{method.slug}.cli"
        if importlib.util.find_spec(module_name) is not None:
            app.add_typer(importlib.import_module(module_name).app, name=method.cli_name)


_register_method_commands()


def run() -> None:
    """Entry point: user errors print one line and exit 2, without a traceback."""
    # PyTorch's CPU allocator backs large tensors with transparent huge pages when this is set (it reads the variable
    # once, at its first allocation, hence here, before torch is imported). Fresh tensors then fault in 2 MiB pages
    # instead of 4 KiB ones: DTC's training step at 112x112x80 went from 20.7 to 16.5 s on a 2-core CPU. A value the
    # user set wins.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    try:
        app(prog_name="lowlabel")
    except LowlabelError as err:
        # escaped: messages hold brackets such as lowlabel[text]; one line, however narrow the terminal
        err_console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        sys.exit(2)
