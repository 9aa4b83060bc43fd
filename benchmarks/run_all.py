"""Run every benchmark script (quick mode with --quick), then render RESULTS.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    extra = sys.argv[1:]
    failed = []
    for script in sorted(HERE.glob("*.py")):
        if script.name.startswith("_") or script.name in ("render.py", "run_all.py"):
            continue
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script), *extra], cwd=HERE).returncode != 0:
            failed.append(script.name)
    subprocess.run([sys.executable, str(HERE / "render.py")], check=True)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")
