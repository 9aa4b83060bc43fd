"""`lowlabel fiqa ...`: a recogniser, pseudo-labels, regressor training, scoring and EVRC on a folder per identity.

No torch import at module level: commands import what they need. User errors raise `LowlabelError`, which the main
CLI (`lowlabel.cli.run`) prints as one line with exit status 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lowlabel.commands import ConfigFile, Device, Force, Out, Resume, SetOption, Threads, set_threads
from lowlabel.errors import LowlabelError

app = typer.Typer(help="SDD-FIQA face image quality: recognizer, label, train, score, evrc.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

DataDir = Annotated[Path, typer.Argument(help="Folder with one sub-folder of face crops per identity.")]
Recognizer = Annotated[str, typer.Option(
    help="dlib, or a TorchScript file (B,3,S,S) in [-1,1] -> (B,D), e.g. from `lowlabel fiqa recognizer`.")]
Embeddings = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    help="Precomputed embeddings instead of --recognizer: .npy (N,D), rows in the order of the images (identity "
         "folders sorted by name, files sorted by path inside), or .npz with 'embeddings' and 'paths'.")]
Size = Annotated[int, typer.Option(help="Input side for a TorchScript recogniser.")]
CacheDir = Annotated[Optional[Path], typer.Option(help="Embedding cache folder [DATA_DIR/.lowlabel_cache].")]  # noqa: UP045


def _embeddings(data_dir: Path, recognizer: str, embeddings: Path | None, size: int, cache_dir: Path | None):
    """The folder listing and its embeddings (N, D) float32."""
    from lowlabel.methods.sdd_fiqa.data import folder_embeddings, read_identity_folders

    folder = read_identity_folders(data_dir)
    emb = folder_embeddings(folder, data_dir, recognizer=recognizer, embeddings=embeddings, size=size,
                            cache_dir=cache_dir or data_dir / ".lowlabel_cache")
    return folder, emb


@app.command()
def recognizer(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option(help="TorchScript file to write.")] = Path("recognizer.pt"),
    size: Annotated[int, typer.Option(help="Image side the recogniser sees (the regressor's image_size).")] = 112,
    width: Annotated[int, typer.Option(help="Trunk width (the regressor's width).")] = 16,
    steps: Annotated[int, typer.Option(help="Training steps (batch 64, Adam 2e-3, cosine).")] = 600,
    seed: int = 0,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Train the built-in recogniser (ArcFace-style margin softmax) on a folder per identity and save it as
    TorchScript, for `fiqa label --recognizer FILE` and `fiqa train --recognizer FILE` (images held in memory)."""
    import dataclasses

    import torch

    from lowlabel.engine import runtime as rt
    from lowlabel.engine.recipe import TrainConfig
    from lowlabel.methods.sdd_fiqa import recipe
    from lowlabel.methods.sdd_fiqa.data import load_images, read_identity_folders
    from lowlabel.methods.sdd_fiqa.extractors import save_recognizer

    set_threads(threads)
    folder = read_identity_folders(data_dir)
    runtime = rt.init(device, seed=seed)
    rc = recipe.RecognizerConfig(width=width)
    rc = dataclasses.replace(rc, batch_size=min(rc.batch_size, len(folder.paths)), train=TrainConfig(
        max_steps=steps, log_every=max(steps // 10, 1), checkpoint_every=10**9, seed=seed))
    embedder = recipe.train_recognizer(load_images(folder.paths, size), torch.from_numpy(folder.labels), rc, runtime,
                                       image_size=size)
    typer.echo(f"{len(folder.paths)} images, {len(folder.names)} identities -> {save_recognizer(embedder, out)}")


@app.command()
def label(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option(help="CSV of path,identity,quality.")] = Path("labels.csv"),
    recognizer: Recognizer = "dlib",
    embeddings: Embeddings = None,
    size: Size = 112,
    repeats: Annotated[int, typer.Option(help="Repetitions (official 12).")] = 12,
    seed: int = 0,
    skip_singletons: Annotated[bool, typer.Option(help="Label identities with one image NaN instead of failing.")]
    = False,
    cache_dir: CacheDir = None,
) -> None:
    """Embed every image (or read --embeddings) and write SDD-FIQA pseudo-labels (0-100)."""
    import numpy as np
    import torch

    from lowlabel.methods.sdd_fiqa.data import check_identities, read_identity_folders, write_labels
    from lowlabel.methods.sdd_fiqa.losses import sdd_pseudo_labels

    check_identities(read_identity_folders(data_dir), data_dir, skip_singletons=skip_singletons)
    folder, emb = _embeddings(data_dir, recognizer, embeddings, size, cache_dir)
    try:
        q = sdd_pseudo_labels(torch.from_numpy(emb), torch.from_numpy(folder.labels), repeats=repeats, seed=seed,
                              skip_singletons=skip_singletons).numpy()
    except LowlabelError as err:
        raise LowlabelError(f"{data_dir}: {err}") from None
    write_labels(out, [p.relative_to(data_dir) for p in folder.paths], folder.labels, q)
    skipped = int(np.isnan(q).sum())
    typer.echo(f"{len(q)} images, {len(folder.names)} identities -> {out}"
               + (f" ({skipped} singleton images skipped)" if skipped else ""))


def _recorded_labels(resume: Path) -> str:
    from lowlabel.engine import config as cfg_mod
    from lowlabel.engine import rundir
    from lowlabel.methods.sdd_fiqa import recipe

    return cfg_mod.load_config(recipe.Config, rundir.resume_dir(resume, "sdd_fiqa") / "config.yaml").labels_file


@app.command()
def train(
    data_dir: Annotated[Optional[Path], typer.Argument(  # noqa: UP045
        help="The folder that was labelled (with --resume: the run's recorded folder by default).")] = None,
    labels: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="CSV from `fiqa label` (config: labels_file).")] = None,
    recognizer: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Recogniser file whose trunk starts the regressor (from `fiqa recognizer`), or 'none' for a trunk "
             "trained from scratch (config: init_from).")] = None,
    out: Out = Path("runs"),
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = None,
    force: Force = False,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Train the quality regressor on the pseudo-labels (official optimiser and schedule by default); the run
    folder records the data folder and the labels file, and `--resume RUN` continues it."""
    from lowlabel.engine import rundir
    from lowlabel.engine.checkpoint import newest_checkpoint
    from lowlabel.files import read_json, write_json
    from lowlabel.methods.sdd_fiqa import recipe

    if data_dir is None and resume is None:
        raise LowlabelError("give DATA_DIR (the labelled folder), or --resume RUN_DIR")
    labels_file = str(labels.resolve()) if labels is not None else None
    if resume is not None and labels_file is not None and not force and labels_file != _recorded_labels(resume):
        raise LowlabelError(f"--labels {labels} differs from the labels file of the run in {resume}: resume without "
                            "--labels, or pass --force to switch")
    init_from = recognizer if recognizer in (None, "none") else str(Path(recognizer).resolve())
    continues = resume is not None and newest_checkpoint(resume) is not None  # the checkpoint holds the trunk
    cfg, run, runtime = rundir.open_run(recipe.Config, "sdd_fiqa", out=out, data=data_dir, resume=resume, force=force,
                                        config=config, overrides=set_ or [],
                                        options={"labels_file": labels_file, "init_from": init_from}, device=device,
                                        threads=threads, check=functools.partial(
                                            recipe.check_data_config, trunk_needed=not continues))
    if runtime.is_main:
        record = read_json(run.dir / "run.json", "run record")
        write_json(run.dir / "run.json", {**record, "labels": cfg.labels_file, "recognizer": cfg.init_from})
    with rundir.removed_on_error(run):
        summary = recipe.train(cfg, data=run.data, run_dir=run.dir, runtime=runtime, resume=run.resumed)
    typer.echo(f"run folder: {run.dir}; steps {summary['steps']}")


@app.command()
def score(
    images: Annotated[list[Path], typer.Argument(help="Image files (face crops) or folders of them.")],
    model: Annotated[Path, typer.Option(help="Regressor checkpoint from `fiqa train`.")],
    config: Annotated[Optional[Path], typer.Option(help="Run config.yaml (default: beside the checkpoint).")]  # noqa: UP045
    = None,
    out: Annotated[Optional[Path], typer.Option(help="CSV file (default: stdout).")] = None,  # noqa: UP045
    threads: Threads = 0,
) -> None:
    """Score images with a trained regressor: CSV of path,score (higher = better quality)."""
    from lowlabel.data.io import list_images
    from lowlabel.engine import config as cfg_mod
    from lowlabel.engine.batches import embed
    from lowlabel.engine.recipe import load_model
    from lowlabel.methods.sdd_fiqa import recipe
    from lowlabel.methods.sdd_fiqa.data import csv_bytes, load_images, write_csv

    set_threads(threads)
    files = [f for p in images for f in (list_images(p) if p.is_dir() else [p])]
    if not files:
        raise LowlabelError(f"no image found in {', '.join(map(str, images))}")
    found = config or next((p / "config.yaml" for p in model.resolve().parents if (p / "config.yaml").is_file()),
                           None)
    cfg = cfg_mod.load_config(recipe.Config, found)
    regressor = load_model(recipe.build_model, cfg, model)
    rows = [[str(p), f"{s:.4f}"] for p, s in zip(files, embed(regressor, load_images(files, cfg.image_size)).tolist(),
                                                 strict=True)]
    if out is not None:
        typer.echo(f"{len(rows)} images -> {write_csv(out, ['path', 'score'], rows)}")
    else:  # the bytes keep non-UTF-8 file names as they are; a text-only stdout (tests) gets them escaped
        data = csv_bytes([["path", "score"], *rows])
        binary = getattr(sys.stdout, "buffer", None)
        binary.write(data) if binary is not None else sys.stdout.write(data.decode("utf-8", "backslashreplace"))


@app.command()
def evrc(
    data_dir: Annotated[Optional[Path], typer.Argument(  # noqa: UP045
        help="Folder per identity: genuine/impostor pairs are built from it (not with --pairs).")] = None,
    quality: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Image qualities: `fiqa score` CSV (path,score) or a label CSV (path,...,quality).")] = None,
    recognizer: Recognizer = "dlib",
    embeddings: Embeddings = None,
    size: Size = 112,
    cache_dir: CacheDir = None,
    genuine_pairs: Annotated[int, typer.Option(help="At most this many genuine pairs (all if fewer).")] = 100_000,
    impostor_pairs: Annotated[int, typer.Option(help="At most this many impostor pairs (all if fewer).")]
    = 1_000_000,
    seed: Annotated[int, typer.Option(help="Seed of the pair sampling.")] = 0,
    pairs: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Instead of DATA_DIR: your own CSV with columns score,genuine (1/0),quality_a,quality_b.")] = None,
    out: Annotated[Path, typer.Option(help="PNG of the curve; the curve and AOC go to the same name .json.")]
    = Path("evrc.png"),
    fmr: float = 1e-3,
    fixed_threshold: Annotated[bool, typer.Option(help="Fix the threshold at no rejection.")] = False,
) -> None:
    """Error-versus-reject curve and AOC: pairs built from DATA_DIR (cosine of the recogniser's embeddings, pair
    quality = the lower of the two image qualities) or read from --pairs."""
    from lowlabel.methods.sdd_fiqa.evaluation import evrc_report

    if pairs is not None:
        from lowlabel.methods.sdd_fiqa.data import read_pairs

        table = read_pairs(pairs)
        source = {"pairs": str(pairs)}
    elif data_dir is not None and quality is not None:
        from lowlabel.methods.sdd_fiqa.data import image_qualities, read_scores
        from lowlabel.methods.sdd_fiqa.evaluation import folder_pairs

        folder, emb = _embeddings(data_dir, recognizer, embeddings, size, cache_dir)
        q = image_qualities(folder, read_scores(quality, data_dir), quality)
        table = folder_pairs(folder.labels, emb, q, max_genuine=genuine_pairs, max_impostor=impostor_pairs, seed=seed)
        source = {"data": str(data_dir), "quality": str(quality), "seed": seed}
    else:
        raise LowlabelError("give DATA_DIR with --quality scores.csv, or --pairs pairs.csv")
    curve, summary = evrc_report(table, out, fmr=fmr, fixed_threshold=fixed_threshold, source=source)
    for x, y in zip(curve.fractions, curve.fnmr, strict=True):
        typer.echo(f"{x:.2f}\t{y:.4f}")
    typer.echo(f"AOC = {summary['aoc']:.4f} (FMR {fmr:g}; {summary['genuine_pairs']} genuine / "
               f"{summary['impostor_pairs']} impostor pairs); plot: {out}; curve: {out.with_suffix('.json')}")
