"""`lowlabel grounding_ckd ...`: prepare Flickr30K Entities / ReferItGame data with any detector's detections, or
COCO-layout data with a Darknet detector; train; compare CKD with NCE alone over paired seeds; ground phrases with a
trained model (no detector needed).

No torch import at module level: the commands import what they need.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lowlabel.commands import ConfigFile, Device, Force, Out, Resume, SetOption, Threads, set_threads
from lowlabel.errors import LowlabelError

if TYPE_CHECKING:
    from lowlabel.methods.grounding_ckd.features import GroundingSet

console = Console()
app = typer.Typer(help="Weakly supervised phrase grounding by contrastive knowledge distillation (CKD).",
                  no_args_is_help=True)


def _config(config: Path | None, set_: list[str] | None, options: dict) -> object:
    from lowlabel.engine.config import load_config
    from lowlabel.methods.grounding_ckd.recipe import Config

    return load_config(Config, config, set_ or [], options=options)


@app.command("prepare-coco")
def prepare_coco(
    root: Annotated[Path, typer.Argument(help="COCO layout: annotations/{captions,instances}_<split>2017.json, "
                                              "<split>2017/*.jpg.")],
    detector: Annotated[Path, typer.Option(help="Folder with a Darknet .cfg and .weights (80 COCO classes).")],
    out: Annotated[Path, typer.Option(help="Folder for train.npz and val.npz.")] = Path("grounding_coco"),
    splits: Annotated[str, typer.Option(help="Comma-separated COCO splits.")] = "train,val",
    regions: Annotated[int, typer.Option(help="Proposals kept per image (official 30).")] = 30,
    long_side: Annotated[int, typer.Option(help="Image long side for the MobileNetV2 features.")] = 480,
    cache: Annotated[Optional[Path], typer.Option(help="Cache of detector outputs and features "  # noqa: UP045
                                                       "(default: <tmp>/lowlabel-grounding-ckd).")] = None,
    threads: Threads = 0,
) -> None:
    """Detector proposals and class scores (the teacher), MobileNetV2 region features, caption phrases matched to
    COCO categories (ground truth from the instance boxes): one features file per split."""
    from lowlabel.methods.grounding_ckd.coco import prepare_split

    set_threads(threads)
    if regions < 1:
        raise LowlabelError(f"--regions {regions}: need at least 1")
    for split in _split_names(splits):
        _write_split(out, split, prepare_split(root, split, detector, num_regions=regions, long_side=long_side,
                                               cache=cache))


@app.command()
def prepare(
    images: Annotated[Path, typer.Argument(help="Folder holding the images the annotations name.")],
    flickr: Annotated[Optional[Path], typer.Option(help="Flickr30K Entities root: Sentences/, Annotations/ and the "  # noqa: UP045
                                                        "split files <split>.txt.")] = None,
    referit: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP045
        help="ReferItGame-style list 'image<TAB>phrase<TAB>box' (repeat, one per split; the split is the file "
             "stem).")] = None,
    splits: Annotated[str, typer.Option(help="Comma-separated Flickr30K splits.")] = "train,val",
    detections: Annotated[Optional[Path], typer.Option(help="Detections JSON/NPZ of any detector (format in "  # noqa: UP045
                                                            "grounding_ckd/detections.py).")] = None,
    detector: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Or: folder with a Darknet .cfg, .weights and .names.")] = None,
    match: Annotated[str, typer.Option(help="Phrase -> class: 'similarity' (MiniLM) or 'table' (--table).")] = \
        "similarity",
    table: Annotated[Optional[Path], typer.Option(help="The official phrase -> class JSON, for --match table.")] = None,  # noqa: UP045
    box_format: Annotated[str, typer.Option(help="Boxes of --referit lists: xyxy or xywh.")] = "xyxy",
    out: Annotated[Path, typer.Option(help="Folder for one <split>.npz per split.")] = Path("grounding_data"),
    regions: Annotated[int, typer.Option(help="Proposals kept per image (official 30).")] = 30,
    long_side: Annotated[int, typer.Option(help="Image long side for the MobileNetV2 features.")] = 480,
    threads: Threads = 0,
) -> None:
    """Flickr30K Entities or ReferItGame-style annotations, any detector's detections (or a Darknet detector) and a
    phrase -> class matching -> one features file per split for `grounding train`."""
    from lowlabel.methods.grounding_ckd.prepare import prepare as prepare_sets

    set_threads(threads)
    if referit and flickr is None and splits != "train,val":
        raise LowlabelError("--splits applies to --flickr; a --referit list's split is its file stem")
    for split, data in prepare_sets(images, flickr=flickr, referit=referit or [], splits=_split_names(splits),
                                    detections=detections, detector=detector, match=match, table=table,
                                    num_regions=regions, long_side=long_side, box_format=box_format):
        _write_split(out, split, data)


def _split_names(splits: str) -> list[str]:
    names = [s.strip() for s in splits.split(",") if s.strip()]
    if not names:
        raise LowlabelError(f"--splits '{splits}': name at least one split, e.g. train,val")
    return names


def _write_split(out: Path, split: str, data: GroundingSet) -> None:
    from lowlabel.methods.grounding_ckd.features import write_grounding_set

    path = write_grounding_set(out / f"{split}.npz", data)
    console.print(f"{path}: {len(data.image_names)} images, {len(data.sentences)} sentences, "
                  f"{len(data.phrase_text)} phrases ({int(data.gt_mask.any(1).sum())} with a box)")


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(help="Folder with train.npz and val.npz; none: the shapes "  # noqa: UP045
                                                      "world.")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="Training steps (config: train.max_steps; "  # noqa: UP045
                                                           "official: 6 epochs).")] = None,
    nce_only: Annotated[bool, typer.Option(help="The ablation: no distillation term.")] = False,
    out: Out = Path("runs"),
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = None,
    force: Force = False,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Train CKD (or --nce-only) and evaluate the last step on the evaluation split; prints the run folder."""
    import dataclasses

    from lowlabel.engine import config as cfg_mod
    from lowlabel.engine import rundir
    from lowlabel.engine import runtime as rt
    from lowlabel.methods.grounding_ckd import recipe

    options = {"train.max_steps": iterations, "distill": False if nce_only else None}
    cfg, run, runtime = rundir.open_run(recipe.Config, "grounding_ckd", out=out, data=data, resume=resume,
                                        force=force, config=config, overrides=set_ or [], options=options,
                                        device=device, threads=threads, check=recipe.check)
    try:
        with rundir.removed_on_error(run):
            summary = recipe.train(cfg, data=run.data, run_dir=run.dir, runtime=runtime, resume=run.resumed)
    finally:
        rt.shutdown()
    if not runtime.is_main:
        return
    fitted = {k: summary[k] for k in ("region_dim", "feature_mean", "feature_std")}
    cfg_mod.save_config(dataclasses.replace(cfg, **fitted), run.dir / "config.yaml")  # what `ground` rebuilds
    console.print(f"run folder: {run.dir}")
    console.print_json(json.dumps({"test": summary["test"], "references": summary["references"]}))


@app.command()
def compare(
    data: Annotated[Path, typer.Option(help="Folder with train.npz and val.npz (from prepare-coco).")],
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (paired: both rows use each).")] = "0,1,2",
    iterations: Annotated[Optional[int], typer.Option(help="Training steps (config: train.max_steps).")] = None,  # noqa: UP045
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the table as JSON here.")] = None,  # noqa: UP045
    out: Annotated[Path, typer.Option(help="Folder for the runs.")] = Path("runs/grounding_ckd_compare"),
    config: ConfigFile = None,
    set_: SetOption = None,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """CKD vs NCE alone over paired seeds, with the detector-alone and random references (Recall@1/5/10)."""
    from lowlabel.engine import runtime as rt
    from lowlabel.files import write_json
    from lowlabel.methods.grounding_ckd.compare import compare as run_compare

    set_threads(threads)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise LowlabelError(f"--seeds {seeds}: give integers separated by commas, e.g. 0,1,2") from None
    if not seed_list:
        raise LowlabelError("--seeds: give at least one seed")
    cfg = _config(config, set_, {"train.max_steps": iterations})
    result = run_compare(cfg, data, seed_list, out, rt.init(device))
    table = Table(title=f"grounding_ckd on {data} ({result['phrases']} phrases, {len(seed_list)} seeds)")
    for column in ("row", "R@1", "R@5", "R@10", "R@1 per seed"):
        table.add_column(column, justify="right")
    for name, row in result["mean"].items():
        per = ", ".join(f"{r['R@1']:.4f}" for r in result["per_seed"][name])
        table.add_row(name, *(f"{row[k]:.4f}" for k in ("R@1", "R@5", "R@10")), per)
    for name, value in result["references"].items():
        table.add_row(name, f"{value:.4f}", "", "", "")
    console.print(table)
    console.print(f"CKD beats NCE alone in {result['wins']} of {len(seed_list)} seeds")
    if json_out is not None:
        write_json(json_out, result)
        console.print(f"wrote {json_out}")


@app.command()
def ground(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `lowlabel grounding train`.")],
    data: Annotated[Path, typer.Argument(help="Features file (.npz) of the images and phrases to ground.")],
    out: Annotated[Path, typer.Option(help="JSON file: per sentence, each phrase's box and score.")] = Path(
        "grounding.json"),
    config: Annotated[Optional[Path], typer.Option(help="Config (default: the run's config.yaml).")] = None,  # noqa: UP045
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Ground every phrase of a features file to its best proposal (region features and phrases only; the file's
    detector scores are not read)."""
    from lowlabel.engine import runtime as rt
    from lowlabel.engine.recipe import load_model
    from lowlabel.files import write_json
    from lowlabel.methods.grounding_ckd import recipe
    from lowlabel.methods.grounding_ckd.features import read_grounding_set

    set_threads(threads)
    run_config = checkpoint.resolve().parent.parent / "config.yaml"
    cfg = _config(config or (run_config if run_config.is_file() else None), [], {})
    model = load_model(recipe.build_model, cfg, checkpoint, rt.init(device).device)
    sets = read_grounding_set(data)
    phrases = recipe.phrase_arrays(cfg, sets)
    scores = recipe.ground(model, sets, phrases)
    rows = []
    for s, sentence in enumerate(sets.sentences):
        image = int(sets.sentence_image[s])
        found = []
        for p, q in enumerate(phrases.slots[s].tolist()):
            if q >= 0:
                r = int(scores[s, p].argmax())
                found.append({"phrase": sets.phrase_text[q], "box": sets.boxes[image, r].tolist(),
                              "score": float(scores[s, p, r])})
        rows.append({"image": sets.image_names[image], "sentence": sentence, "phrases": found})
    write_json(out, {"sentences": rows})
    console.print(f"wrote {out}: {sum(len(r['phrases']) for r in rows)} phrases of {len(rows)} sentences")
