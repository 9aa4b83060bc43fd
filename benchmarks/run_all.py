"""Run the hot-path benchmarks (time and peak memory as sizes grow; `--quick` passed through), then render
RESULTS.md.

A hot-path benchmark is `<slug>.py` for a registered method, `engine_overhead.py` or `synth_<world>.py`. The quality
scripts (demos over seeds, tuning worlds, real-data runs, the bad-input sweep, the demo budget) take from minutes to
hours and are run one by one, as each method's docs page says; their JSON files are rendered all the same.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lowlabel.registry import METHODS

HERE = Path(__file__).resolve().parent


def hot_path_scripts() -> list[Path]:
    return [s for s in sorted(HERE.glob("*.py"))
            if s.stem in METHODS or s.stem == "engine_overhead" or s.stem.startswith("synth_")]


if __name__ == "__main__":
    extra = sys.argv[1:]
    failed = []
    for script in hot_path_scripts():
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script), *extra], cwd=HERE).returncode != 0:
            failed.append(script.name)
    subprocess.run([sys.executable, str(HERE / "render.py")], check=True)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")
