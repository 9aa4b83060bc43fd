"""`lowlabel sgp ...`: the self-supervised loop on your fragments, registration of two fragment files (FPFH or a
trained student), and evaluation against poses.

No torch import at module level: the commands import what they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lowlabel.commands import ConfigFile, Device, Force, Out, Resume, SetOption, Threads, set_threads
from lowlabel.errors import LowlabelError

console = Console()
app = typer.Typer(help="SGP: self-supervised point-cloud registration and relative pose (train, register, eval).",
                  no_args_is_help=True)


def _run_config(model: Path | None, config: Path | None) -> object:
    from lowlabel.engine.config import load_config
    from lowlabel.methods.sgp.recipe import Config

    if config is None and model is not None:
        for parent in model.resolve().parents[:4]:
            if (parent / "config.yaml").is_file():
                config = parent / "config.yaml"
                break
    return load_config(Config, config, [])


def _check_mode(resume: Path | None, images: bool) -> None:
    """A resumed run keeps its mode: an image-pair run resumes with --images, a fragment run without."""
    if resume is None:
        return
    from omegaconf import OmegaConf

    from lowlabel.engine import rundir

    run_dir = rundir.resume_dir(resume, "sgp")
    try:
        was_images = "num_queries" in OmegaConf.load(run_dir / "config.yaml")
    except Exception as err:  # YAML errors come from the yaml parser
        raise LowlabelError(f"{run_dir / 'config.yaml'}: not a readable run config ({err})") from None
    if was_images != images:
        kind = "an image-pair (2D) run: resume it with --images" if was_images else (
            "a fragment (3D) run: resume it without --images")
        raise LowlabelError(f"{run_dir} is {kind}")


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Folder of cloud_bin_<i>.ply/.npz/.npy fragments (or of such scene folders); pairs from overlaps.txt, "
             "else every pair of a scene. Poses (.info.txt) serve evaluation only. With --images: a MegaDepth root "
             "(<scene>/dense<k>/aligned/{images/,img_cam.txt,pairs.txt}) or one aligned folder; img_cam.txt poses "
             "serve evaluation only. None: geometry world.")] = None,
    images: Annotated[bool, typer.Option(
        "--images", help="Relative pose on image pairs (SIFT teacher, CAPS student) instead of fragments.")] = False,
    rounds: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Teaching rounds after the FPFH bootstrap (config: meta_iters, 2).")] = None,
    iterations: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Student steps per round (default: train.epochs=100 epochs) (config: train.max_steps).")] = None,
    supervised: Annotated[bool, typer.Option(help="Oracle: train on the ground-truth poses instead.")] = False,
    out: Out = Path("runs"),
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = None,
    force: Force = False,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Run the teacher-student rounds; prints the run folder and the per-round table (test recall: registration
    recall for fragments, pose recall for image pairs)."""
    from lowlabel.engine import rundir
    from lowlabel.methods.sgp import images as image_pairs
    from lowlabel.methods.sgp import recipe

    _check_mode(resume, images)
    options = {"meta_iters": rounds, "train.max_steps": iterations, "supervised": True if supervised else None}
    summary, run = rundir.train_run(image_pairs if images else recipe, "sgp", out=out, data=data, resume=resume,
                                    force=force, config=config, overrides=set_ or [], options=options, device=device,
                                    threads=threads)
    if not run.main:
        return
    table = Table(title=f"sgp: {run.dir}")
    for column in ("round", "teacher", "pairs", "verified", "label precision", "steps", "test recall"):
        table.add_column(column, justify="right")
    for r in summary["rounds"]:
        table.add_row(r["round"], r["teacher"], str(r["pairs"]), str(r["verified"]), f"{r['label_precision']:.3f}",
                      str(r["steps"]), f"{r['test_recall']:.3f}")
    console.print(table)
    console.print(f"run folder: {run.dir}")


@app.command()
def register(
    source: Annotated[Path, typer.Argument(help="Source fragment (.ply, .npy, or .npz with key 'pcd'; metres).")],
    target: Annotated[Path, typer.Argument(help="Target fragment.")],
    model: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Student checkpoint (rounds/<r>/checkpoints/*.pt); none: FPFH.")] = None,
    config: ConfigFile = None,
    orient: Annotated[str, typer.Option(help="FPFH normals towards 'origin' (sensor frames) or 'centroid'.")] = (
        "origin"),
    pose: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Ground truth: a 4x4 text or .npy file (source -> target) to report the errors against.")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Write the estimated 4x4 transform here (text).")] = None,  # noqa: UP045
    seed: Annotated[int, typer.Option(help="RANSAC seed.")] = 0,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Register SOURCE onto TARGET (RANSAC + ICP at 1.4 voxel) and print the 4x4 transform and its confidence."""
    import numpy as np

    from lowlabel.methods.sgp import geometry, recipe, teacher
    from lowlabel.methods.sgp.data import read_fragment

    set_threads(threads)
    cfg = _run_config(model, config)
    src, dst = read_fragment(source), read_fragment(target)
    rng = np.random.default_rng(seed)
    if model is None:
        reg = teacher.register_fpfh(src, dst, cfg.voxel_size, orient=orient, rng=rng, max_iter=cfg.ransac_iter)
    else:
        from lowlabel.engine import runtime as rt
        from lowlabel.engine.recipe import load_model

        net = load_model(recipe.build_model, cfg, model, rt.init(device).device)
        (ps, fs), (pd, fd) = recipe.describe(net, [src, dst], cfg.voxel_size)
        reg = teacher.register(ps, pd, fs, fd, mutual=False, distance=1.4 * cfg.voxel_size,
                               max_iter=cfg.ransac_iter, rng=rng)
    console.print(np.array2string(reg.T, precision=6, suppress_small=True))
    console.print(f"confidence {reg.confidence:.4f} ({reg.num_correspondences} correspondences); "
                  f"verifier: {'keep' if teacher.verify_3d(reg.confidence, cfg.min_confidence) else 'reject'}")
    if pose is not None:
        gt = _read_pose(pose)
        re = float(geometry.rotation_error(reg.T[:3, :3], gt[:3, :3]))
        te = float(geometry.translation_error(reg.T[:3, 3], gt[:3, 3]))
        console.print(f"rotation error {re:.3f} deg, translation error {te:.4f}; "
                      f"{'success' if re < 15 and te < 0.3 else 'failure'} (15 deg, 0.3)")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(output, reg.T)
        console.print(f"wrote {output}")


def _read_pose(path: Path) -> object:
    import numpy as np

    if not path.is_file():
        raise LowlabelError(f"--pose {path}: file not found")
    try:
        T = np.load(path) if path.suffix == ".npy" else np.loadtxt(path)
    except ValueError as err:
        raise LowlabelError(f"--pose {path}: not a 4x4 matrix of numbers ({err})") from None
    if np.shape(T) != (4, 4):
        raise LowlabelError(f"--pose {path}: shape {np.shape(T)}, need a 4x4 matrix")
    return T


@app.command("eval")
def evaluate(
    model: Annotated[Path, typer.Argument(help="Student checkpoint written by `lowlabel sgp train`.")],
    data: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Fragment folder with .info.txt poses; none: the geometry world's test pairs.")] = None,
    config: ConfigFile = None,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Registration recall (rotation < 15 deg and translation < 0.3) and per-pair errors of a student."""
    from lowlabel.engine import runtime as rt
    from lowlabel.engine.recipe import load_model
    from lowlabel.methods.sgp import recipe

    set_threads(threads)
    cfg = _run_config(model, config)
    net = load_model(recipe.build_model, cfg, model, rt.init(device).device)
    pairs = recipe.load_pairs(cfg, data, "test")
    rows = recipe.registration_rows(pairs, recipe.teach(pairs, net, cfg, recipe._orient(cfg, data), seed=10**6))
    table = Table(title=f"sgp: {model}")
    for column in ("scene", "i", "j", "rotation error", "translation error", "success"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["scene"], str(r["i"]), str(r["j"]), f"{r['rotation_error']:.3f}",
                      f"{r['translation_error']:.4f}", "yes" if r["success"] else "no")
    console.print(table)
    console.print(f"recall {recipe.recall(rows):.3f} over {len(rows)} pairs")
