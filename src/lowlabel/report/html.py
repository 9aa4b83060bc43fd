"""One self-contained HTML page (images inlined, no network at view time) for run folders or a demo's comparison.

The page is rendered by jinja2 from `templates/report.html.j2`; each method contributes its own figures through the
`figures(run_dir)` hook of its demo module (found through the registry), so this package knows no method.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowlabel import registry
from lowlabel.errors import LowlabelError
from lowlabel.files import write_text
from lowlabel.report import plots
from lowlabel.report.runs import Run, config_diff, mean_and_spread, read_run, seeds_of_one_setting


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"cells": [...], "css": ""}


@dataclass
class Image:
    caption: str
    data: str  # base64 PNG


@dataclass
class Section:
    id: str
    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    verdict: str = ""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def _image(caption: str, png: bytes) -> Image:
    return Image(caption, base64.b64encode(png).decode("ascii"))


def _file_images(paths: Sequence[Path], root: Path | None = None) -> list[Image]:
    out = []
    for path in paths:
        if path.suffix.lower() == ".png" and path.is_file():
            out.append(_image(str(path.relative_to(root)) if root and path.is_relative_to(root) else path.name,
                              path.read_bytes()))
    return out


def render(title: str, subtitle: str, sections: Sequence[Section], out: str | Path) -> Path:
    """Write the page to `out` (atomically) and return its path."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("lowlabel.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    html = env.get_template("report.html.j2").render(title=title, subtitle=subtitle, sections=sections)
    return write_text(out, html)


def _final_table(runs: Sequence[Run]) -> Table:
    names = sorted({k for r in runs for k in r.final})
    table = Table("final metrics per run", ["run", *names])
    table.rows = [{"cells": [r.name, *(_fmt(r.final.get(n)) for n in names)], "css": ""} for r in runs]
    if seeds_of_one_setting(runs):
        stats = mean_and_spread(runs)
        table.rows.append({"cells": [f"mean ± std over {len(runs)} seeds",
                                     *(f"{stats[n][0]:.4g} ± {stats[n][1]:.2g}" for n in names)], "css": "method"})
    return table


def _config_section(runs: Sequence[Run]) -> Section:
    section = Section("config", "Configuration")
    if len(runs) == 1:
        table = Table("config.yaml", ["key", "value"])
        table.rows = [{"cells": [k, _fmt(v)], "css": ""} for k, v in sorted(runs[0].config.items())]
        if not runs[0].config:
            section.notes.append("this run folder has no config.yaml")
    else:
        diff = config_diff(runs)
        table = Table("keys whose values differ between the runs", ["key", *(r.name for r in runs)])
        table.rows = [{"cells": [k, *(_fmt(v) for v in values)], "css": ""} for k, values in diff.items()]
        section.notes.append("every other key is the same in all runs" if diff else "the configs are identical")
    if table.rows:
        section.tables.append(table)
    return section


def run_report(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """The HTML page of one or several run folders: config (or the diff between them), loss curves per term,
    evaluation metrics over training, final metrics (mean ± std when the runs are seeds of one setting) and each
    method's own figures."""
    if not run_dirs:
        raise LowlabelError("give at least one run folder")
    runs = [read_run(p) for p in run_dirs]
    overview = Section("runs", "Runs")
    table = Table("run folders", ["run", "method", "steps", "seconds", "folder"])
    table.rows = [{"cells": [r.name, r.slug, _fmt(r.summary.get("steps")), _fmt(r.summary.get("seconds")),
                             str(r.path)], "css": ""} for r in runs]
    overview.tables.append(table)
    results = Section("results", "Final metrics")
    if any(r.final for r in runs):
        results.tables.append(_final_table(runs))
        if seeds_of_one_setting(runs):
            results.notes.append("the runs differ in train.seed only: the last row is their mean ± std")
    else:
        results.notes.append("no final metrics recorded (summary.json has no eval/test section)")
    curves = Section("losses", "Training losses")
    if (png := plots.loss_curves(runs)) is not None:
        curves.images.append(_image("loss per named term (metrics.jsonl)", png))
    else:
        curves.notes.append("no metrics.jsonl rows")
    evals = Section("evaluation", "Evaluation during training")
    if (png := plots.eval_curves(runs)) is not None:
        evals.images.append(_image("eval/ metrics logged by the trainer", png))
    else:
        evals.notes.append("no evaluation was logged during training (train.eval_every = 0)")
    figures = Section("figures", "Method figures")
    for run in runs:
        try:
            figures.images += _file_images(registry.figures(run.slug, run.path), run.path.parent)
        except LowlabelError as err:  # e.g. a figure that needs an extra not installed here: the rest still shows
            figures.notes.append(f"{run.name}: no {run.slug} figure ({err})")
    if not figures.images:
        figures.notes.append("the runs' methods made no figures for these folders")
    sections = [overview, _config_section(runs), results, curves, evals, figures]
    title = f"lowlabel report: {', '.join(sorted({r.slug for r in runs}))}"
    return render(title, f"{len(runs)} run(s), written {time.strftime('%Y-%m-%d %H:%M')}", sections, out)


def demo_section(result: Mapping[str, Any], figures: Sequence[Path]) -> Section:
    """The section of one method's demo: its table (method and baseline marked), notes, verdict and figures."""
    rows: Mapping[str, Mapping[str, float]] = result["rows"]
    metrics = [m for m in next(iter(rows.values()), {}) if not m.endswith("_std")]
    table = Table(f"{result['slug']}: demo ({result.get('seconds', 0):.0f} s)", ["model", *metrics])
    for name, row in rows.items():
        cells = [f"{row[m]:.4f}" + (f" ± {row[m + '_std']:.4f}" if f"{m}_std" in row else "") if m in row else ""
                 for m in metrics]
        css = "method" if name == result["method"] else "baseline" if name == result["baseline"] else ""
        tag = " (method)" if css == "method" else " (baseline)" if css == "baseline" else ""
        table.rows.append({"cells": [name + tag, *cells], "css": css})
    verdict = result.get("verdict") or (f"{result['method']} {'beats' if result.get('wins') else 'does NOT beat'} "
                                        f"{result['baseline']} on {result['metric']}.")
    return Section(result["slug"], registry.get(result["slug"]).title, list(result.get("notes", [])), [table],
                   _file_images(figures), verdict)


def demo_report(results: Sequence[tuple[Mapping[str, Any], Sequence[Path]]], out: str | Path, *,
                quick: bool) -> Path:
    """The HTML page of `lowlabel demo`: one section per method (its comparison table and figures)."""
    sections = [demo_section(result, figures) for result, figures in results]
    mode = "quick demos" if quick else "full demos"
    return render("lowlabel demo", f"{mode} on built-in data, written {time.strftime('%Y-%m-%d %H:%M')}",
                  sections, out)
