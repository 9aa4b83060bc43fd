"""DTC demo on the volumes world: DTC against the same V-Net trained on the labelled volumes only (spec "Small-scale
CPU demo"), both with the same steps, optimiser, seed and test set; also the head disagreement on unlabelled data."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from lowlabel.engine.demo import DemoResult
from lowlabel.engine.runtime import Runtime
from lowlabel.engine.trainer import write_json
from lowlabel.methods.dtc import recipe
from lowlabel.methods.dtc.losses import level_set_to_mask
from lowlabel.methods.dtc.plots import overlay_png


def demo_config(quick: bool) -> recipe.Config:
    """Narrow V-Net, 32^3 patches of 48x48x32 volumes, 4 labelled of 40 (quick: of 16) training volumes."""
    synthetic = recipe.SyntheticConfig(n_train=16 if quick else 40, n_test=4 if quick else 10, shape=[48, 48, 32])
    cfg = recipe.Config(labelled=4, n_filters=4, patch=[32, 32, 32], stride=[16, 16, 16], synthetic=synthetic,
                        infer_batch=8)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=0, checkpoint_every=10**9))
    return recipe.with_steps(cfg, 150 if quick else 800)


def head_disagreement(model: torch.nn.Module, cases: list, cfg: recipe.Config) -> float:
    """Mean |sigmoid(-k z) - sigmoid(logits)| of the two heads on the central patch of each volume (eval mode)."""
    patch = recipe.effective_patch(cfg)
    crops = []
    for case in cases:
        start = [max(0, (s - p) // 2) for s, p in zip(case.image.shape, patch, strict=True)]
        window = tuple(slice(a, a + p) for a, p in zip(start, patch, strict=True))
        crops.append(torch.from_numpy(case.image[window].copy()))
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        level_set, logits = model(torch.stack(crops)[:, None].to(device))
        return float((level_set_to_mask(level_set, cfg.k) - torch.sigmoid(logits)).abs().mean())


def demo(*, quick: bool, out: Path, runtime: Runtime) -> DemoResult:
    """Train DTC and the labelled-only V-Net (Dice loss) on the volumes world; compare test Dice (higher wins)."""
    t0 = time.perf_counter()
    cfg = demo_config(quick)
    out = Path(out)
    variants = {
        "DTC": cfg,
        "V-Net, labelled only": dataclasses.replace(cfg, unlabelled_bs=0, consistency=0.0, beta=0.0),
    }
    if not quick:
        variants["V-Net + level set, labelled only"] = dataclasses.replace(cfg, unlabelled_bs=0, consistency=0.0)
    rows: dict[str, dict[str, float]] = {}
    unlabelled = recipe.synthetic_cases(cfg, "train")[cfg.labelled :]
    for name, variant in variants.items():
        run_dir = out / name.split(",")[0].replace(" ", "_").replace("+", "plus")
        model, summary = recipe.train_model(variant, data=None, run_dir=run_dir, runtime=runtime, resume=False)
        rows[name] = {**summary["test"], "head_disagreement": head_disagreement(model, unlabelled, variant)}
        if name == "DTC":
            overlay_png(model, variant, recipe.synthetic_cases(cfg, "test")[0], out / "dtc_overlay.png")
    write_json(out / "rows.json", rows)
    return DemoResult(slug="dtc", metric="dice", method="DTC", baseline="V-Net, labelled only", rows=rows,
                      notes=[f"{cfg.labelled} labelled + {len(unlabelled)} unlabelled volumes of "
                             f"{cfg.synthetic.shape}, {cfg.synthetic.n_test} test volumes, "
                             f"{cfg.train.max_steps} steps, V-Net n_filters={cfg.n_filters}"],
                      seconds=time.perf_counter() - t0)
