"""COMPLETER demo quality runs for the fair comparison (issue #22): the tuning grid on the tuning world, then the
evaluation world run once with the settings the grid picked.

    python benchmarks/completer_demo.py --tune      # -> results/completer_tuning.json
    python benchmarks/completer_demo.py [--quick]   # -> results/completer_demo_{quick,full}.json

Tuning rows: every setting of `demo.GRID` (COMPLETER's α and learning rate, k-means' imputation, spectral
clustering's neighbours, CCA's components and ridge) with mean ± std ACC/NMI/ARI over `demo.SEEDS` on world
`demo.TUNING_WORLD` at the full demo's budget; the notes name the best mean ACC per approach, which `demo.CHOSEN` then
holds. Evaluation rows: every approach's metrics per seed, their mean and population std, and COMPLETER's wins on ACC
(quick: seed 1 only, as `lowlabel demo completer --quick`; full: seeds 1, 2, 3, as `lowlabel demo completer`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import demo_rows, write_results
from lowlabel.engine import runtime as rt
from lowlabel.files import read_json
from lowlabel.methods.completer import demo


def tuning() -> None:
    grid = demo.tune(runtime=rt.init("cpu", seed=0))
    rows = [{"approach": name, "setting": setting, **metrics} for name, settings in grid.items()
            for setting, metrics in settings.items()]
    best = {name: max(settings, key=lambda s, st=settings: st[s]["acc"]) for name, settings in grid.items()}
    write_results("completer_tuning", rows, notes=f"tuning world {demo.TUNING_WORLD}, seeds {list(demo.SEEDS)}, "
                  f"full demo budget; best mean ACC per approach: {best}")


def evaluation(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as out:
        result = demo.run(quick=quick, out=Path(out), runtime=rt.init("cpu", seed=0))
        record = read_json(Path(out) / "per_seed.json")
    rows = demo_rows(result, record["per_seed"], record["seeds"], "approach")
    rows += [{"approach": name, "seed": "completer wins (acc)", "wins": wins, "of": len(record["seeds"])}
             for name, wins in record["wins"].items()]
    write_results(f"completer_demo_{'quick' if quick else 'full'}", rows,
                  notes=" | ".join([*result.notes, f"{result.seconds:.0f} s"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick demo's scale (evaluation only)")
    parser.add_argument("--tune", action="store_true", help="run the tuning grid instead of the evaluation seeds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.tune:
        tuning()
    else:
        evaluation(args.quick)


if __name__ == "__main__":
    main()
