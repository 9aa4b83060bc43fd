"""The demo's summary from hand-made per-seed scores (no training): means, wins and drops worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowlabel.files import read_json
from lowlabel.methods.dyml import demo


def _scores(fine_map: float, middle_asi: float, coarse_asi: float) -> dict[str, float]:
    row = {f"{level}_{key}": 0.5 for level in demo.LEVELS for key in demo.KEYS}
    row.update({"fine_map": fine_map, "middle_asi": middle_asi, "coarse_asi": coarse_asi, "overall_map": 0.5,
                "overall_asi": (0.5 + middle_asi + coarse_asi) / 3})
    return row


def test_summary_counts_wins_and_fine_map_drops(tmp_path: Path) -> None:
    runs = {"shapes: CSL": [_scores(0.60, 0.50, 0.55), _scores(0.50, 0.40, 0.30)],
            "shapes: fine-only CosFace": [_scores(0.62, 0.45, 0.50), _scores(0.49, 0.42, 0.20)],
            "shapes: per-level-sum CosFace": [_scores(0.55, 0.60, 0.65), _scores(0.45, 0.55, 0.60)]}
    result = demo.summarise(runs, seeds=(0, 1), worlds=("shapes",), quick=False, out=tmp_path, seconds=1.0)
    assert result.rows["shapes: CSL"]["fine_map"] == pytest.approx(0.55)
    assert result.rows["shapes: CSL"]["fine_map_std"] == pytest.approx(0.05)  # population std of 0.60, 0.50
    assert "CSL above fine-only in middle ASI 1/2, coarse ASI 2/2 seeds" in result.notes[-1]
    assert result.notes[-1].endswith("+2.0, -1.0")  # fine-only minus CSL, in points
    assert read_json(tmp_path / "rows.json")["per_seed"] == runs
    assert (tmp_path / "asi_per_level.png").is_file()


def test_floor_row_is_the_untrained_network_and_decides_works(tmp_path: Path) -> None:
    runs = {"shapes: CSL": [_scores(0.60, 0.50, 0.55)], "shapes: fine-only CosFace": [_scores(0.62, 0.45, 0.50)],
            f"shapes: {demo.FLOOR}": [_scores(0.20, 0.30, 0.40)]}
    result = demo.summarise(runs, seeds=(0,), worlds=("shapes",), quick=True, out=tmp_path, seconds=1.0)
    assert result.floor == "shapes: untrained network"
    assert result.works and result.wins  # overall ASI 0.517 vs floor 0.400 and fine-only 0.483
    assert "untrained network 0.400" in next(n for n in result.notes if "overall_asi per seed" in n)
    runs[f"shapes: {demo.FLOOR}"] = [_scores(0.20, 0.60, 0.70)]  # overall ASI 0.600 > CSL's 0.517
    below = demo.summarise(runs, seeds=(0,), worlds=("shapes",), quick=True, out=tmp_path, seconds=1.0)
    assert not below.works


def test_every_model_spec_builds_its_loss() -> None:
    for name, spec in demo.MODELS.items():
        cfg = demo.demo_config("shapes", spec, seed=0, quick=True)
        assert (cfg.loss.name, cfg.loss.baseline) == {
            "CSL": ("csl", "cosface"), "fine-only CosFace": ("fine_only", "cosface"),
            "per-level-sum CosFace": ("level_sum", "cosface"),
            "per-level-sum Multi-Similarity": ("level_sum", "multi_similarity")}[name]
        assert cfg.optim.lr == demo.LR and cfg.train.max_steps == demo.QUICK_STEPS
