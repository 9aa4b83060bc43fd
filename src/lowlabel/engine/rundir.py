"""Run folders: runs/<slug>/<timestamp>/ with config.yaml, metrics.jsonl, checkpoints/, summary.json, plots."""

from __future__ import annotations

import time
from pathlib import Path

from lowlabel.engine.runtime import broadcast_object
from lowlabel.errors import LowlabelError


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
