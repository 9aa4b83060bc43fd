"""Hypothesis profiles for the bad-input sweep and the counts report (see sweep_harness.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from sweep_harness import COUNTS

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}
settings.register_profile("ci", max_examples=15, derandomize=True, **_COMMON)
settings.register_profile("sweep", max_examples=100, derandomize=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    report = os.environ.get("LOWLABEL_SWEEP_REPORT")
    if not report or not COUNTS:
        return
    totals = {key: sum(c[key] for c in COUNTS.values()) for key in ("tried", "clear error", "accepted (valid)",
                                                                     "crash")}
    payload = {"profile": os.environ.get("HYPOTHESIS_PROFILE", "ci"), "totals": totals,
               "targets": {t: dict(c) for t, c in sorted(COUNTS.items())}}
    Path(report).parent.mkdir(parents=True, exist_ok=True)
    Path(report).write_text(json.dumps(payload, indent=2))
