"""DTC hot paths: a training step (official 2+2 at 112x112x80 and the CPU scale), sliding-window inference of one full
LA case, and the signed distance map of 4 patches, with time and peak memory.

    python benchmarks/dtc.py [--quick] [--threads N]

Training step = forward + the three loss terms (SDF included) + backward + SGD step of the 16-filter V-Net.
Inference = one LA test case (UPT6DX9IQY9JAZ7HJKA7, 175x132x88: 45 windows at stride 18/18/4), our batched
windows vs the same code one window at a time (the official way). SDF = our exact torch transform vs scipy's EDT
with the official formula (skimage's inner boundary replaced by its equivalent, foreground voxels at distance 1).
Official figures on this machine (issue 7): 9.2 s per training step (5.3 GB peak), 36 s per LA case.
--quick skips the official-size training step (about a minute on a free 2-core CPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure, write_results
from lowlabel.methods.dtc import recipe
from lowlabel.methods.dtc.data import read_la_case
from lowlabel.methods.dtc.inference import model_prob_fn, sliding_window_probs
from lowlabel.methods.dtc.losses import signed_distance_map
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


def train_step_row(name: str, cfg: recipe.Config, repeat: int) -> dict:
    model = recipe.build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    step_fn = recipe.make_step_fn(cfg)
    image, label = patches(CASE, recipe.effective_patch(cfg), 4, cfg.scale)

    def step() -> None:
        losses = step_fn(model, (image, label), 3000)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    m = measure(step, repeat=repeat, warmup=1)
    return {"what": name, "size": "x".join(map(str, recipe.effective_patch(cfg))), "n_filters": cfg.n_filters,
            **m, "vs_official": OFFICIAL_STEP_S / m["seconds_best"] if cfg.scale == 1.0 and cfg.n_filters == 16
            else float("nan")}


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
    # training steps
    cpu = recipe.Config(scale=0.5, n_filters=4)
    rows.append(train_step_row("train step 2+2 (CPU scale)", cpu, repeat=3))
    rows.append(train_step_row("train step 2+2 (CPU scale, 16 filters)", recipe.Config(scale=0.5), repeat=2))
    if not args.quick:
        rows.append(train_step_row("train step 2+2 (official)", recipe.Config(), repeat=1))
    # sliding window over one full LA case, 16-filter V-Net (untrained weights: the cost does not depend on them)
    cfg = recipe.Config()
    image = torch.from_numpy(read_la_case(LA, CASE).image) if LA.is_dir() else torch.randn(175, 132, 88)
    prob_fn = model_prob_fn(VNet(n_filters=16))
    for batch in (1, 4) if not args.quick else (4,):
        m = measure(lambda batch=batch: sliding_window_probs(prob_fn, image, cfg.patch, cfg.stride, batch), repeat=1)
        rows.append({"what": f"sliding window, {batch} window(s) per batch", "size": "x".join(map(str, image.shape)),
                     "n_filters": 16, **m, "vs_official": OFFICIAL_CASE_S / m["seconds_best"]})
    write_results("dtc_quick" if args.quick else "dtc", rows,
                  notes="vs_official = official seconds / ours (issue 7 figures: 9.2 s/step, 36 s/case); for sdf "
                        "rows: scipy seconds / ours. Timings taken on a shared 2-core CPU; see docs/methods/dtc.md.")


if __name__ == "__main__":
    main()
