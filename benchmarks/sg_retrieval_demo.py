"""IRSGS demo quality runs for the fair comparison (issue #22): the tuning grid on the tuning world, then the
evaluation worlds run once with the settings the grid picked.

    python benchmarks/sg_retrieval_demo.py --tune [--quick]   # -> results/sg_retrieval_tuning_{quick,full}.json
    python benchmarks/sg_retrieval_demo.py [--quick]          # -> results/sg_retrieval_demo_{quick,full}.json

Tuning rows: every setting of `demo.GRID` (IRSGS-GCN learning rate, labels TF-IDF term weighting, WL subtree rounds)
with its metrics on world `demo.TUNING_SEED`; the notes name the setting with the best pool nDCG@10 per row, which
`demo.CHOSEN` then holds. Evaluation rows: every model's metrics per seed and their mean and standard deviation over
the seeds (quick: seed 0 only, as `lowlabel demo sg_retrieval --quick`; full: 0, 1, 2), plus the GCN's wins.
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
from lowlabel.methods.sg_retrieval import demo


def tuning(quick: bool) -> None:
    grid = demo.tune(quick=quick, runtime=rt.init("cpu", seed=0))
    rows = [{"row": name, "setting": setting, **metrics} for name, settings in grid.items()
            for setting, metrics in settings.items()]
    best = {name: max(settings, key=lambda s, st=settings: st[s]["ndcg@10"]) for name, settings in grid.items()}
    write_results(f"sg_retrieval_tuning_{'quick' if quick else 'full'}", rows,
                  notes=f"tuning world {demo.TUNING_SEED}; best pool nDCG@10 per row: {best}")


def evaluation(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as out:
        result = demo.run(quick=quick, out=Path(out), runtime=rt.init("cpu", seed=0))
        record = read_json(Path(out) / "rows.json")
    rows = demo_rows(result, record["per_seed"], record["seeds"], "model")
    write_results(f"sg_retrieval_demo_{'quick' if quick else 'full'}", rows,
                  notes=" | ".join([*result.notes, f"{result.seconds:.0f} s"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick demo's scale")
    parser.add_argument("--tune", action="store_true", help="run the tuning grid instead of the evaluation seeds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    (tuning if args.tune else evaluation)(args.quick)


if __name__ == "__main__":
    main()
