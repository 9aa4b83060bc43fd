"""Run folders: runs/<slug>/<timestamp>/ with run.json, config.yaml, metrics.jsonl, checkpoints/, summary.json, plots.

`run.json` records what a resume needs besides the config: the method and the data the run trains on. A resumed run
reads both back; it refuses different `--data` unless forced, so a run never silently continues on other data.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lowlabel import __version__
from lowlabel.engine import config as cfg_mod
from lowlabel.engine import runtime as rt
from lowlabel.engine.runtime import broadcast_object
from lowlabel.errors import LowlabelError
from lowlabel.files import read_json, write_json

T = TypeVar("T")


def new_run_dir(root: str | Path, slug: str) -> Path:
    """A fresh folder `root/slug/<timestamp>` (the same on every rank under torchrun)."""
    stamp = broadcast_object(time.strftime("%Y%m%d-%H%M%S"))
    base = Path(root) / slug
    path, n = base / stamp, 1
    while path.exists():
        path, n = base / f"{stamp}-{n}", n + 1
    path = Path(broadcast_object(str(path)))
    path.mkdir(parents=True, exist_ok=True)
    return path


def resume_dir(path: str | Path, slug: str) -> Path:
    """The run folder to resume: `path` itself if it is a run folder, else the newest run under `path/slug`."""
    path = Path(path)
    if (path / "config.yaml").is_file():
        return path
    runs = sorted(p for p in (path / slug).glob("*") if (p / "config.yaml").is_file()) if (path / slug).is_dir() else []
    if not runs:
        raise LowlabelError(f"no run folder to resume in {path} (looked for config.yaml there and in {path / slug}/*)")
    return runs[-1]


@dataclass(frozen=True)
class Run:
    """An opened run folder: where it is, the data it trains on (None: the method's built-in world), whether
    training continues from its newest checkpoint, and whether this process is the one that reports (rank 0; still
    known after `train_run` has left the process group)."""

    dir: Path
    data: Path | None
    resumed: bool
    main: bool = True


def recorded_data(run_dir: Path, slug: str) -> tuple[bool, Path | None]:
    """(whether run.json exists, the data path it records) for a run folder; a run.json of another method is refused."""
    record_file = run_dir / "run.json"
    if not record_file.is_file():
        return False, None
    record = read_json(record_file, "run record")
    if not isinstance(record, dict) or record.get("slug") not in (None, slug):
        raise LowlabelError(f"{record_file} belongs to a {record.get('slug') if isinstance(record, dict) else '?'} "
                            f"run, not {slug}: resume it with that method's command")
    return True, Path(record["data"]) if record.get("data") else None


def _same(a: Path | None, b: Path | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.resolve() == b.resolve())


def open_run(schema: type[T], slug: str, *, out: Path, data: Path | None = None, resume: Path | None = None,
             force: bool = False, config: Path | None = None, overrides: Sequence[str] = (),
             options: Mapping[str, Any] | None = None, device: str = "auto", threads: int = 0,
             check: Callable[[T], None] | None = None) -> tuple[T, Run, rt.Runtime]:
    """Everything a `train` command does before training: threads, config, runtime, run folder.

    New run: config = defaults < `config` file < `options` < `overrides` (`engine.config.load_config`); a fresh
    folder under `out/slug` gets config.yaml and run.json (slug, data, version, command line).
    Resume (`resume` is a run folder, or a root whose newest `slug` run is taken): the run's own config.yaml replaces
    the defaults and `config` file, options and overrides still apply on top; the data defaults to the recorded one,
    and a different `data` is refused unless `force` (run.json then records the switch).
    `check(cfg)` (the method's config validation) runs before any folder is made.
    """
    rt.set_threads(threads)
    run_path = resume_dir(resume, slug) if resume is not None else None
    if run_path is not None and config is not None:
        raise LowlabelError(f"--config {config} with --resume: a resumed run keeps {run_path / 'config.yaml'}; "
                            "change single keys with --set")
    if data is not None and not data.exists():
        raise LowlabelError(f"--data {data} does not exist")
    if run_path is not None:
        has_record, recorded = recorded_data(run_path, slug)
        if data is None:
            data = recorded
        elif has_record and not _same(data, recorded) and not force:
            raise LowlabelError(f"{run_path} trained on {recorded or 'the built-in world'}, not {data}: resume without "
                                "--data to continue on the recorded data, or pass --force to switch")
        if data is not None and not data.exists():
            raise LowlabelError(f"the data of {run_path} ({data}) no longer exists: pass --data to point at its copy")
    cfg = cfg_mod.load_config(schema, run_path / "config.yaml" if run_path else config, overrides, options=options)
    if check is not None:
        check(cfg)
    runtime = rt.init(device, seed=cfg.train.seed)  # type: ignore[attr-defined]
    run = Run(run_path if run_path is not None else new_run_dir(out, slug), data, run_path is not None,
              runtime.is_main)
    with removed_on_error(run):  # a full disk while recording leaves no half-made folder
        if runtime.is_main:
            _record(cfg, slug, run.dir, data, resumed=run.resumed)
    return cfg, run, runtime


def _record(cfg: Any, slug: str, run_dir: Path, data: Path | None, *, resumed: bool) -> None:
    """Write config.yaml and run.json (created, or the resume appended) of a run."""
    cfg_mod.save_config(cfg, run_dir / "config.yaml")
    now, path = time.strftime("%Y-%m-%dT%H:%M:%S"), str(data.resolve()) if data is not None else None
    if resumed:
        old = read_json(run_dir / "run.json", "run record") if (run_dir / "run.json").is_file() else {}
        record = {**old, "data": path, "resumed": [*old.get("resumed", []), {"at": now, "command": sys.argv}]}
    else:
        record = {"slug": slug, "data": path, "lowlabel": __version__, "command": sys.argv, "created": now}
    write_json(run_dir / "run.json", record)


@contextmanager
def removed_on_error(run: Run) -> Iterator[Run]:
    """Delete a new run folder when training fails before its first checkpoint (bad data found late, a full disk),
    so no half-made run is left behind; a resumed run, or one with checkpoints, is kept for resuming."""
    try:
        yield run
    except BaseException:
        if not run.resumed and not any(run.dir.rglob("*.pt")) and rt.rank() == 0:
            shutil.rmtree(run.dir, ignore_errors=True)
            for parent in (run.dir.parent, run.dir.parent.parent):  # OUT/slug and OUT, when this run made them
                with suppress(OSError):
                    parent.rmdir()
        raise


def train_run(recipe: Any, slug: str, **run_args: Any) -> tuple[dict[str, Any], Run]:
    """A `train` command's whole job for a method on the recipe contract: `open_run(recipe.Config, slug,
    **run_args)`, `recipe.train` on the run's data (resuming when asked), the folder removed if training fails before
    its first checkpoint, and the process group left. Returns (summary, run)."""
    cfg, run, runtime = open_run(recipe.Config, slug, **run_args)
    try:
        with removed_on_error(run):
            summary = recipe.train(cfg, data=run.data, run_dir=run.dir, runtime=runtime, resume=run.resumed)
    finally:
        rt.shutdown()
    return summary, run
