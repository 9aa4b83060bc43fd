"""DTC hot paths: a training step (official 2+2 at 112x112x80 and the CPU scale), sliding-window inference of one full
LA case, and the signed distance map of 4 patches, with time and peak memory.

    python benchmarks/dtc.py [--quick] [--threads N]

Training step = forward + the three loss terms (SDF included) + backward + SGD step of the 16-filter V-Net;
ours = channels-last tensors on CPU and the torch signed distance (as `lowlabel dtc train`); the official
way = contiguous tensors and scipy's signed distance, timed in the same process. Inference = one LA test case
(UPT6DX9IQY9JAZ7HJKA7, 175x132x88: 45 windows at stride 18/18/4): ours (BatchNorm folded into the convolutions,
channels-last, 1/2/4 windows per batch; best of 2 passes) vs the plain network one window at a time (the official way).
SDF = our exact torch transform vs scipy's EDT with the official formula (skimage's inner boundary replaced by its
equivalent, foreground voxels at distance 1).
Official figures on this machine (issue 7): 9.2 s per training step (5.3 GB peak), 36 s per LA case.
--quick skips the official-size training step (about a minute on a free 2-core CPU).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure, write_results
from lowlabel.engine.recipe import build_optimizer
from lowlabel.methods.dtc import losses, recipe
from lowlabel.methods.dtc.data import read_la_case
from lowlabel.methods.dtc.inference import model_prob_fn, sliding_window_probs
from lowlabel.methods.dtc.losses import signed_distance_map
from lowlabel.nn.fast import prefer_channels_last
from lowlabel.nn.vnet import VNet

LA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "la_heart"
CASE = "UPT6DX9IQY9JAZ7HJKA7"
OFFICIAL_STEP_S, OFFICIAL_CASE_S = 9.2, 36.0


def scipy_sdf(mask: np.ndarray) -> np.ndarray:
    """Official compute_sdf per sample (scipy EDT); boundary = foreground voxels with a background face neighbour."""
    out = np.zeros(mask.shape, dtype=np.float64)
    for b in range(mask.shape[0]):
        pos = mask[b].astype(bool)
        if pos.any():
            posdis, negdis = ndimage.distance_transform_edt(pos), ndimage.distance_transform_edt(~pos)
            sdf = negdis / negdis.max() - posdis / posdis.max()
            sdf[posdis == 1] = 0
            out[b] = sdf
    return out


def patches(case: str, patch: list[int], n: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """n crops of one real LA case (or random data when the files are absent): image (n,1,*P), label (n,*P)."""
    if LA.is_dir():
        c = read_la_case(LA, case, scale)
        starts = [max(0, (s - p) // 2) for s, p in zip(c.image.shape, patch, strict=True)]
        window = tuple(slice(a, a + p) for a, p in zip(starts, patch, strict=True))
        image = torch.from_numpy(np.ascontiguousarray(c.image[window]))
        label = torch.from_numpy(np.ascontiguousarray(c.label[window])).long()
        return image[None, None].repeat(n, 1, 1, 1, 1), label[None].repeat(n, 1, 1, 1)
    label = torch.zeros(n, *patch, dtype=torch.long)
    label[:, patch[0] // 4 : patch[0] // 2, patch[1] // 4 : patch[1] // 2, patch[2] // 4 : patch[2] // 2] = 1
    return torch.randn(n, 1, *patch), label


def plain_step_fn(cfg: recipe.Config) -> Callable:
    """The official training step: same losses, signed distance target by scipy per sample (compute_sdf)."""
    nl = cfg.labelled_bs

    def step_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> dict:
        image, label = batch
        level_set, logits = model(image)
        target = torch.from_numpy(scipy_sdf(label[:nl].numpy())).float()
        ramp = recipe.consistency_ramp(step, cfg.consistency, cfg.consistency_rampup,
                                       recipe.ramp_unit(cfg, recipe.OFFICIAL_STEPS))
        return {"dice": losses.dice_loss(torch.sigmoid(logits[:nl, 0]), label[:nl]),
                "lsf": cfg.beta * losses.level_set_loss(level_set[:nl, 0], target),
                "dtc": ramp * losses.dual_task_consistency(level_set, logits, cfg.k)}

    return step_fn


def train_step_row(name: str, cfg: recipe.Config, repeat: int, *, plain: bool) -> dict:
    """One 2+2 step (forward, losses, backward, SGD) timed; `plain` = the official way (contiguous tensors, scipy
    signed distance), otherwise ours (channels-last on CPU, torch signed distance), as `lowlabel dtc train` runs."""
    torch.manual_seed(0)
    model = recipe.build_model(cfg)
    if not plain:
        prefer_channels_last(model, "cpu")
    opt = build_optimizer(model.parameters(), cfg.optim)
    step_fn = plain_step_fn(cfg) if plain else recipe.make_step_fn(cfg, recipe.OFFICIAL_STEPS)
    image, label = patches(CASE, recipe.effective_patch(cfg), 4, cfg.scale)

    def step() -> None:
        out = step_fn(model, (image, label), 3000)
        opt.zero_grad(set_to_none=True)
        sum(out.values()).backward()
        opt.step()

    m = measure(step, repeat=repeat, warmup=1)
    official = cfg.scale == 1.0 and cfg.n_filters == 16
    return {"what": name, "size": "x".join(map(str, recipe.effective_patch(cfg))), "n_filters": cfg.n_filters,
            **m, "vs_official": OFFICIAL_STEP_S / m["seconds_best"] if official else float("nan")}


def plain_prob_fn(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The official inference: the trained network as it is (BatchNorm layers, contiguous tensors), eval mode."""
    model.eval()

    def fn(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.sigmoid(model(batch)[1])

    return fn


def calibrated_vnet(batch: torch.Tensor) -> VNet:
    """A 16-filter V-Net whose BatchNorm running statistics are those of `batch`, as in a trained network, so the
    timed network normalises like one that is used (the initial statistics, mean 0 and variance 1, timed the same
    within noise when checked: 1.01 vs 1.00 s per window)."""
    net = VNet(n_filters=16).train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.momentum = 1.0
    with torch.no_grad():
        net(batch)
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    # signed distance map of 4 patches: torch (ours) vs scipy (official)
    for patch in ([56, 56, 40], [112, 112, 80]):
        _, label = patches(CASE, patch, 4)
        ours = measure(lambda label=label: signed_distance_map(label), repeat=2, warmup=1)
        ref = measure(lambda label=label: scipy_sdf(label.numpy()), repeat=2, warmup=0)
        diff = float(np.abs(signed_distance_map(label).numpy() - scipy_sdf(label.numpy())).max())
        rows.append({"what": "sdf x4 (torch exact)", "size": "x".join(map(str, patch)), "n_filters": 0, **ours,
                     "vs_official": ref["seconds_best"] / ours["seconds_best"], "max_abs_diff": diff})
        rows.append({"what": "sdf x4 (scipy, official)", "size": "x".join(map(str, patch)), "n_filters": 0, **ref,
                     "vs_official": 1.0})
    # training steps: ours, and the official way in the same process at the official size
    rows.append(train_step_row("train step 2+2 (CPU scale)", recipe.Config(scale=0.5, n_filters=4), 3, plain=False))
    rows.append(train_step_row("train step 2+2 (CPU scale, 16 filters)", recipe.Config(scale=0.5), 2, plain=False))
    if not args.quick:
        rows.append(train_step_row("train step 2+2 (official size, ours)", recipe.Config(), 2, plain=False))
        rows.append(train_step_row("train step 2+2 (official size, official way)", recipe.Config(), 1, plain=True))
    # sliding window over one full LA case, 16-filter V-Net with calibrated BatchNorm statistics
    cfg = recipe.Config()
    image = torch.from_numpy(read_la_case(LA, CASE).image) if LA.is_dir() else torch.randn(175, 132, 88)
    net = calibrated_vnet(patches(CASE, cfg.patch, 2)[0])
    size = "x".join(map(str, image.shape))
    runs = [("official way: plain network, 1 window per batch", plain_prob_fn(net), 1)]
    runs += [(f"ours: folded BatchNorm, channels-last, {b} window(s) per batch", model_prob_fn(net), b)
             for b in ((1, 2, 4) if not args.quick else (2,))]
    for what, prob_fn, batch in runs:
        m = measure(lambda f=prob_fn, b=batch: sliding_window_probs(f, image, cfg.patch, cfg.stride, b),
                    repeat=1 if args.quick else 2)
        rows.append({"what": f"sliding window, {what}", "size": size, "n_filters": 16, **m,
                     "vs_official": OFFICIAL_CASE_S / m["seconds_best"]})
    write_results("dtc_quick" if args.quick else "dtc", rows,
                  notes="vs_official = official seconds / ours (issue 7 figures: 9.2 s/step, 36 s/case); for sdf "
                        "rows: scipy seconds / ours. Rows named 'official way' run the official procedure in this "
                        "process, on the same machine and torch, as a same-day reference. See docs/methods/dtc.md.")


if __name__ == "__main__":
    main()
