"""Reading run folders for the report: config, metrics.jsonl, summary.json and what the run says about itself."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lowlabel.errors import LowlabelError

SEED_KEY = "train.seed"


@dataclass
class Run:
    """One run folder: its name, method slug, flattened config, metric rows and final metrics."""

    path: Path
    slug: str
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    final: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LowlabelError(f"{path}: not readable JSON ({err}); the run may still be writing it") from None


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise LowlabelError(f"{path}:{number}: not a JSON line; the file is damaged") from None
    return rows


def final_metrics(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The run's final numbers: the last `eval/...` values of metrics.jsonl, then the numeric entries of the
    summary's "eval", "test" and "metrics" sections (later wins)."""
    out: dict[str, float] = {}
    for row in rows:
        out.update({k.removeprefix("eval/"): float(v) for k, v in row.items()
                    if k.startswith("eval/") and isinstance(v, (int, float))})
    for section in ("eval", "test", "metrics"):
        values = summary.get(section)
        if isinstance(values, Mapping):
            out.update({k: float(v) for k, v in values.items() if isinstance(v, (int, float))
                        and not isinstance(v, bool)})
    return out


def read_run(path: str | Path) -> Run:
    """A run folder written by `lowlabel train` (or a demo): clear error if it holds none of the run files."""
    path = Path(path)
    if not path.is_dir():
        raise LowlabelError(f"{path}: no such run folder")
    files = [path / name for name in ("config.yaml", "metrics.jsonl", "summary.json", "run.json")]
    if not any(f.is_file() for f in files):
        raise LowlabelError(f"{path}: not a run folder (no config.yaml, metrics.jsonl or summary.json)")
    info = _read_json(path / "run.json") if (path / "run.json").is_file() else {}
    config: dict[str, Any] = {}
    if (path / "config.yaml").is_file():
        try:
            config = flatten(yaml.safe_load((path / "config.yaml").read_text()) or {})
        except yaml.YAMLError as err:
            raise LowlabelError(f"{path / 'config.yaml'}: not valid YAML ({err})") from None
    summary = _read_json(path / "summary.json") if (path / "summary.json").is_file() else {}
    rows = _rows(path / "metrics.jsonl")
    slug = str(info.get("slug") or path.parent.name)
    return Run(path, slug, config, rows, final_metrics(summary, rows), summary)


def config_diff(runs: Sequence[Run]) -> dict[str, list[Any]]:
    """Config keys whose values differ between the runs -> the value of each run (missing: None)."""
    keys = sorted({k for r in runs for k in r.config})
    return {k: [r.config.get(k) for r in runs] for k in keys
            if len({json.dumps(r.config.get(k), sort_keys=True, default=str) for r in runs}) > 1}


def seeds_of_one_setting(runs: Sequence[Run]) -> bool:
    """True when there are several runs whose configs differ in the seed only."""
    diff = config_diff(runs)
    return len(runs) > 1 and set(diff) == {SEED_KEY}


def mean_and_spread(runs: Sequence[Run]) -> dict[str, tuple[float, float, int]]:
    """Per final metric: (mean, population std, number of runs that have it)."""
    names = sorted({k for r in runs for k in r.final})
    out = {}
    for name in names:
        values = [r.final[name] for r in runs if name in r.final]
        out[name] = (statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0, len(values))
    return out
