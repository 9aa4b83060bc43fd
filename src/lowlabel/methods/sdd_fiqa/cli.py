"""`lowlabel fiqa ...`: pseudo-labels for a folder per identity, regressor training, scoring, EVRC.

No torch import at module level: commands import what they need.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="SDD-FIQA face image quality: label, train, score, evrc.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


@app.command()
def label(
    data_dir: Annotated[Path, typer.Argument(help="Folder with one sub-folder of face crops per identity.")],
    out: Annotated[Path, typer.Option(help="CSV of path,identity,quality.")] = Path("labels.csv"),
    recognizer: Annotated[str, typer.Option(help="dlib, or a TorchScript file (B,3,S,S) in [-1,1] -> (B,D).")] = "dlib",
    size: Annotated[int, typer.Option(help="Input side for a TorchScript recogniser.")] = 112,
    repeats: Annotated[int, typer.Option(help="Repetitions (official 12).")] = 12,
    seed: int = 0,
    skip_singletons: Annotated[bool, typer.Option(help="Label identities with one image NaN instead of failing.")]
    = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Embedding cache folder.")] = None,  # noqa: UP045
) -> None:
    """Embed every image and write SDD-FIQA pseudo-labels (0-100)."""
    from lowlabel.errors import LowlabelError

    try:
        import numpy as np
        import torch

        from lowlabel.methods.sdd_fiqa.data import read_identity_folders, write_labels
        from lowlabel.methods.sdd_fiqa.extractors import embed_files, make_extractor
        from lowlabel.methods.sdd_fiqa.losses import sdd_pseudo_labels

        folder = read_identity_folders(data_dir)
        extractor = make_extractor(recognizer, size=size)
        emb = embed_files(extractor, folder.paths, cache_dir=cache_dir or data_dir / ".lowlabel_cache")
        q = sdd_pseudo_labels(torch.from_numpy(emb), torch.from_numpy(folder.labels), repeats=repeats, seed=seed,
                              skip_singletons=skip_singletons).numpy()
        write_labels(out, [p.relative_to(data_dir) for p in folder.paths], folder.labels, q)
        skipped = int(np.isnan(q).sum())
        typer.echo(f"{len(q)} images, {len(folder.names)} identities -> {out}"
                   + (f" ({skipped} singleton images skipped)" if skipped else ""))
    except LowlabelError as err:
        _fail(err)


@app.command()
def train(
    data_dir: Annotated[Path, typer.Argument(help="The folder that was labelled.")],
    labels: Annotated[Path, typer.Option(help="CSV from `fiqa label` (config key labels_file).")],
    out: Annotated[Path, typer.Option(help="Root of run folders.")] = Path("runs"),
    config: Annotated[Optional[Path], typer.Option(help="YAML config file.")] = None,  # noqa: UP045
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Config override a.b=c.")] = None,  # noqa: UP045
    device: str = "auto",
) -> None:
    """Train the quality regressor on the pseudo-labels (official optimiser and schedule by default)."""
    from lowlabel.errors import LowlabelError

    try:
        from lowlabel.engine import config as cfg_mod
        from lowlabel.engine import rundir
        from lowlabel.engine import runtime as rt
        from lowlabel.methods.sdd_fiqa import recipe

        cfg = cfg_mod.load_config(recipe.Config, config, set_ or [], options={"labels_file": str(labels)})
        runtime = rt.init(device, seed=cfg.train.seed)
        run_dir = rundir.new_run_dir(out, "sdd_fiqa")
        cfg_mod.save_config(cfg, run_dir / "config.yaml")
        summary = recipe.train(cfg, data=data_dir, run_dir=run_dir, runtime=runtime, resume=False)
        typer.echo(f"run folder: {run_dir}; steps {summary['steps']}")
    except LowlabelError as err:
        _fail(err)


@app.command()
def score(
    images: Annotated[list[Path], typer.Argument(help="Image files (face crops).")],
    model: Annotated[Path, typer.Option(help="Regressor checkpoint from `fiqa train`.")],
    config: Annotated[Optional[Path], typer.Option(help="Run config.yaml (default: beside the checkpoint).")]  # noqa: UP045
    = None,
    out: Annotated[Optional[Path], typer.Option(help="CSV file (default: stdout).")] = None,  # noqa: UP045
) -> None:
    """Score images with a trained regressor: CSV of path,score (higher = better quality)."""
    from lowlabel.errors import LowlabelError

    try:
        from lowlabel.engine import config as cfg_mod
        from lowlabel.engine.batches import embed
        from lowlabel.engine.recipe import load_model
        from lowlabel.methods.sdd_fiqa import recipe
        from lowlabel.methods.sdd_fiqa.data import load_images

        found = config or next((p / "config.yaml" for p in model.resolve().parents if (p / "config.yaml").is_file()),
                               None)
        cfg = cfg_mod.load_config(recipe.Config, found)
        regressor = load_model(recipe.build_model, cfg, model)
        scores = embed(regressor, load_images(list(images), cfg.image_size)).tolist()
        fh = open(out, "w", newline="") if out else sys.stdout  # noqa: SIM115 - closed below unless stdout
        writer = csv.writer(fh)
        writer.writerow(["path", "score"])
        writer.writerows([str(p), f"{s:.4f}"] for p, s in zip(images, scores, strict=True))
        if out:
            fh.close()
    except LowlabelError as err:
        _fail(err)


@app.command()
def evrc(
    pairs: Annotated[Path, typer.Argument(help="CSV with columns score,genuine (1/0),quality_a,quality_b.")],
    out: Annotated[Path, typer.Option(help="PNG of the curve.")] = Path("evrc.png"),
    fmr: float = 1e-3,
    fixed_threshold: Annotated[bool, typer.Option(help="Fix the threshold at no rejection.")] = False,
) -> None:
    """Error-versus-reject curve and AOC from verification pairs with image qualities."""
    from lowlabel.errors import LowlabelError

    try:
        import numpy as np

        from lowlabel.metrics.quality import aoc, error_versus_reject, plot_evrc

        try:
            table = np.genfromtxt(pairs, delimiter=",", names=True)
            score_, genuine = table["score"], table["genuine"].astype(bool)
            q = np.minimum(table["quality_a"], table["quality_b"])
        except (OSError, ValueError) as err:
            raise LowlabelError(f"{pairs}: expected a CSV with columns score,genuine,quality_a,quality_b ({err})"
                                ) from None
        curve = error_versus_reject(score_[genuine], score_[~genuine], q[genuine], q[~genuine], fmr=fmr,
                                    recompute_threshold=not fixed_threshold)
        plot_evrc({pairs.stem: curve}, out)
        for x, y in zip(curve.fractions, curve.fnmr, strict=True):
            typer.echo(f"{x:.2f}\t{y:.4f}")
        typer.echo(f"AOC = {aoc(curve):.4f} (FMR {fmr:g}); plot: {out}")
    except LowlabelError as err:
        _fail(err)
