"""What a method's demo returns: its headline metric beside named baselines, and whether the method won."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DemoResult:
    """Rows of metrics per model; `method` and `baseline` name the two rows the headline comparison uses."""

    slug: str
    metric: str
    method: str
    baseline: str
    rows: dict[str, dict[str, float]]
    higher_is_better: bool = True
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def wins(self) -> bool:
        ours, theirs = self.rows[self.method][self.metric], self.rows[self.baseline][self.metric]
        return ours > theirs if self.higher_is_better else ours < theirs

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "wins": self.wins}


@dataclass
class SmokeCase:
    """A tiny instance of a method for the registry-wide tests: one training step on CPU must give finite losses,
    a gradient on every trainable parameter and none on parameters whose names start with `frozen_prefixes`
    (momentum copies, frozen teachers), and the model's state_dict must round-trip."""

    model: Any
    step_fn: Any
    batch: Any
    frozen_prefixes: tuple[str, ...] = ()


def mean_over_seeds(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per model, the mean of every metric over its runs (one per seed) and, where there are several runs, the
    population standard deviation as `<metric>_std`."""
    rows: dict[str, dict[str, float]] = {}
    for name, per_seed in runs.items():
        row: dict[str, float] = {}
        for metric in per_seed[0]:
            values = [r[metric] for r in per_seed]
            row[metric] = statistics.fmean(values)
            if len(values) > 1:
                row[f"{metric}_std"] = statistics.pstdev(values)
        rows[name] = row
    return rows
