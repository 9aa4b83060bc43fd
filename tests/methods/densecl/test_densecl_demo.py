"""The demo's bookkeeping: worlds kept apart, loss curves un-weighted, the table and win counts, the figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lowlabel.methods.densecl import demo


def test_evaluation_and_tuning_worlds_never_meet() -> None:
    seeds = range(3)
    used = [w for s in seeds for w in (*vars(demo.evaluation_worlds(s)).values(),
                                       *vars(demo.tuning_worlds(s)).values())]
    assert len(used) == len(set(used)) == 18


def test_loss_curves_undo_the_loss_weights(tmp_path: Path) -> None:
    for start, rows in {"DenseCL": [{"step": 10, "loss_contra_single": 3.0, "loss_contra_dense": 1.5}],
                        "MoCo-v2": [{"step": 10, "loss_contra_single": 6.5}, {"step": 20, "loss_contra_single": 6.0}]
                        }.items():
        (tmp_path / start / "seed1").mkdir(parents=True)
        (tmp_path / start / "seed1" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    curves = demo.loss_curves(tmp_path)
    assert curves == {"DenseCL/seed1/global": [(10, 6.0)], "DenseCL/seed1/dense": [(10, 3.0)],
                      "MoCo-v2/seed1/global": [(10, 6.5), (20, 6.0)]}


def test_summary_table_wins_and_figure(tmp_path: Path) -> None:
    results = {"DenseCL": {16: [0.30, 0.20, 0.50], 64: [0.6]}, "MoCo-v2": {16: [0.25, 0.30, 0.10], 64: [0.5]},
               "random init": {16: [0.10, 0.10, 0.10], 64: [0.4]}}
    curves = {"DenseCL/seed0/global": [(10, 6.0), (20, 5.5)], "MoCo-v2/seed0/global": [(10, 6.2), (20, 6.1)]}
    result = demo.summarise(results, curves, quick=False, tuning=True, out=tmp_path, seconds=1.0)
    assert result.rows["DenseCL"]["miou"] == pytest.approx(1 / 3)
    assert result.rows["MoCo-v2"]["miou_std"] == pytest.approx(math.sqrt(((0.25 - 0.65 / 3) ** 2 + (0.3 - 0.65 / 3) ** 2
                                                                          + (0.1 - 0.65 / 3) ** 2) / 3))
    assert "2/3 seeds vs MoCo-v2, 3/3 seeds vs random init" in result.notes[1]
    assert result.wins
    assert (tmp_path / "densecl_demo.png").stat().st_size > 1000
