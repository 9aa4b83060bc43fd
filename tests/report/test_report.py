"""The HTML report: a tiny real run renders into one self-contained page with the expected sections and images,
seeds of one setting get mean ± std, and a real browser shows something."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lowlabel import registry
from lowlabel.cli import app
from lowlabel.engine.batches import TensorBatches
from lowlabel.engine.config import save_config
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.trainer import Trainer
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json
from lowlabel.report.figures import figure, save_figure
from lowlabel.report.html import run_report


class Page(HTMLParser):
    """Collects section ids, image sources and every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@dataclass
class RunConfig:
    """The shape of a method's config: the report compares runs by their `train.seed`."""

    train: TrainConfig
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="sgd", lr=0.1))


def tiny_run(root: Path, seed: int) -> Path:
    """A real 12-step training run of a linear model, with an evaluation hook, a saved config and a PNG of the
    kind a method's demo writes (read back through the dtc figures hook)."""
    run_dir = root / "dtc" / f"seed{seed}"
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 3, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = torch.nn.Linear(3, 1)
    config = TrainConfig(max_steps=12, log_every=2, eval_every=4, checkpoint_every=100, seed=seed)
    trainer = Trainer(model, lambda m, b, s: {"mse": ((m(b[0]) - b[1]) ** 2).mean()}, config=config,
                      optim=RunConfig(config).optim, runtime=__import__("lowlabel.engine.runtime",
                                                                               fromlist=["init"]).init("cpu"),
                      run_dir=run_dir, eval_fn=lambda m, s: {"val_mse": float(((m(x) - y) ** 2).mean())})
    trainer.fit(TensorBatches([x, y], 16, trainer.runtime, seed=seed))
    save_config(RunConfig(train=config), run_dir / "config.yaml")
    write_json(run_dir / "run.json", {"slug": "dtc", "data": None})
    fig, ax = figure(figsize=(2, 2))
    ax.plot([0, 1], [seed, 1])
    save_figure(fig, run_dir / "overlay.png")
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    return [tiny_run(root, seed) for seed in (0, 1, 2)]


def test_one_run_renders_every_section_self_contained(runs, tmp_path):
    out = run_report(runs[:1], tmp_path / "one.html")
    page = Page()
    page.feed(out.read_text())
    assert page.sections == ["runs", "config", "results", "losses", "evaluation", "figures"]
    assert len(page.images) == 3  # losses, evaluation, the method's PNG
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.urls == page.images  # nothing to fetch: no links, scripts or stylesheets from elsewhere
    for src in page.images:
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert any(row[:2] == ["train.max_steps", "12"] for row in page.rows)  # the config table


def test_a_figure_hook_that_cannot_draw_leaves_a_note_and_the_rest_of_the_page(runs, tmp_path, monkeypatch):
    def needs_an_extra(slug: str, run_dir: Path) -> list[Path]:
        raise LowlabelError('the face figure needs dlib: pip install "lowlabel[face]"')

    monkeypatch.setattr(registry, "figures", needs_an_extra)
    out = run_report(runs[:1], tmp_path / "no_figure.html")
    page = Page()
    text = out.read_text()
    page.feed(text)
    assert page.sections == ["runs", "config", "results", "losses", "evaluation", "figures"]
    assert len(page.images) == 2  # losses and evaluation; the method's PNG could not be drawn
    assert "seed0: no dtc figure (the face figure needs dlib: pip install &#34;lowlabel[face]&#34;)" in text


def test_seeds_of_one_setting_get_mean_and_spread(runs, tmp_path):
    out = run_report(runs, tmp_path / "seeds.html")
    page = Page()
    page.feed(out.read_text())
    finals = [json.loads((r / "summary.json").read_text())["eval"]["val_mse"] for r in runs]
    (summary_row,) = [row for row in page.rows if row and row[0].startswith("mean ± std over 3 seeds")]
    assert summary_row[1] == f"{np.mean(finals):.4g} ± {np.std(finals):.2g}"
    (diff_header,) = [row for row in page.rows if row and row[0] == "key"]
    assert len(diff_header) == 4  # key + three runs
    labels = [row[0] for row in page.rows if row]
    assert "train.seed" in labels and "train.max_steps" not in labels  # only the key that differs is listed


def test_cli_report_and_a_clear_error_for_a_non_run(runs, tmp_path):
    result = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(tmp_path / "cli.html")])
    assert result.exit_code == 0 and (tmp_path / "cli.html").stat().st_size > 10_000
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "x.html")])
    assert result.exit_code != 0 and "not a run folder" in str(result.exception)


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium (.ci/run installs Debian's chromium)")
def test_a_real_browser_shows_the_page(runs, tmp_path):
    page = run_report(runs, tmp_path / "browser.html")
    shot = tmp_path / "shot.png"
    subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--proxy-server=127.0.0.1:9",  # any network request would fail: the page needs none
                    f"--screenshot={shot}", "--window-size=1200,1600", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1200)
    assert (pixels < 128).mean() > 0.01 and pixels.std() > 20  # text, tables and plots, not a blank page
