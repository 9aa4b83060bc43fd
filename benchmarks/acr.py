"""ACR hot paths: ARC's MMD between the two feature tables (forward + backward), time and peak memory as the table
and the feature width grow, against the official formulation (an N x M x d difference tensor per kernel).

    python benchmarks/acr.py [--quick] [--threads N]

Ours = `lowlabel.methods.acr.losses.mmd_loss` (squared distances from |a|^2 + |b|^2 - 2 a.b, O(N M) memory);
official = exp(-mean((x_i - y_j)^2)) over a broadcast (N, M, d) tensor, as `compute_kernel` of the authors' code.
Rows: tables of 128 (the official size, d = 64 / 1280 / 2048: the demo ResNet, MobileNetV2 and ResNet-50 widths)
and larger tables (256 x 2048, 512 x 512: the official tensor holds N·M·d floats, 0.5 GB). Both agree to 1e-5.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure, write_results
from lowlabel.methods.acr.losses import mmd_loss


def official_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The authors' kernel: exp(-mean_c (x_ic - y_jc)^2) from an (N, M, d) difference tensor."""

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((a[:, None, :] - b[None, :, :]) ** 2).mean(2))

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def case(fn, n: int, d: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, d, generator=gen).mul(3).requires_grad_(True)
    y = torch.rand(n, d, generator=gen).mul(3).add(0.2).requires_grad_(True)

    def run() -> None:
        fn(x, y).backward()

    return measure(run, repeat=5, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tables of 128 only")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [(128, 64), (128, 1280), (128, 2048)] + ([] if args.quick else [(256, 2048), (512, 512)])
    rows = []
    for n, d in sizes:
        x, y = torch.rand(n, d, dtype=torch.float64), torch.rand(n, d, dtype=torch.float64) + 0.1
        assert abs(float(mmd_loss(x, y) - official_mmd(x, y))) < 1e-5
        ours, official = case(mmd_loss, n, d), case(official_mmd, n, d)
        rows.append({"table": n, "dim": d, "ours_s": ours["seconds_best"], "official_s": official["seconds_best"],
                     "speedup": official["seconds_best"] / ours["seconds_best"], "ours_peak_mib": ours["peak_mib"],
                     "official_peak_mib": official["peak_mib"]})
    write_results("acr", rows, notes=f"MMD^2 forward + backward, float32, {args.threads} thread(s), best of 5")


if __name__ == "__main__":
    main()
