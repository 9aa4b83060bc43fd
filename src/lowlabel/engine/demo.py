"""What a method's demo returns: its headline metric beside named baselines, whether the method beat the strongest
one, and whether it at least beat its floor (a reference any working implementation must beat)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DemoResult:
    """Rows of metrics per model; `method` and `baseline` name the two rows of the headline comparison (the
    baseline is the strongest reasonable one, which the method may lose to). `floor` names a row any working
    implementation beats (random, a trivial rule); empty: the baseline is the floor."""

    slug: str
    metric: str
    method: str
    baseline: str
    rows: dict[str, dict[str, float]]
    higher_is_better: bool = True
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    floor: str = ""

    def _beats(self, other: str) -> bool:
        ours, theirs = self.rows[self.method][self.metric], self.rows[other][self.metric]
        return ours > theirs if self.higher_is_better else ours < theirs

    @property
    def wins(self) -> bool:
        """The method beats the named (strongest) baseline."""
        return self._beats(self.baseline)

    @property
    def works(self) -> bool:
        """The method beats its floor: it learned something (a demo failing this is a bug, not a finding)."""
        return self._beats(self.floor or self.baseline)

    @property
    def verdict(self) -> str:
        """One sentence: the headline comparison, and the floor when the method loses it."""
        if self.wins:
            return f"{self.method} beats {self.baseline} on {self.metric}."
        floor = f" (it does beat {self.floor})" if self.floor and self.works else ""
        return f"{self.method} does NOT beat {self.baseline} on {self.metric}{floor}."

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "wins": self.wins, "works": self.works, "verdict": self.verdict}


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
