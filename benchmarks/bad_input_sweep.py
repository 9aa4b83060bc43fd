"""The bad-input sweep, counted: every tests/reliability/test_bad_input_*.py under the `sweep` hypothesis profile
(100 examples per property), one process, outcomes per target written to benchmarks/results/bad_input_sweep.json and
as a table between the markers of docs/reliability.md.

    python benchmarks/bad_input_sweep.py [--profile sweep|ci]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from lowlabel.files import write_text

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "bad_input_sweep.json"
DOC = REPO / "docs" / "reliability.md"
BEGIN, END = "<!-- sweep counts: begin -->", "<!-- sweep counts: end -->"


def table(payload: dict) -> str:
    keys = ("tried", "clear error", "accepted (valid)", "crash")
    lines = ["| target | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for target, counts in payload["targets"].items():
        lines.append(f"| {target} | " + " | ".join(str(counts.get(k, 0)) for k in keys) + " |")
    lines.append("| **all** | " + " | ".join(f"**{payload['totals'][k]}**" for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="sweep", choices=("sweep", "ci"))
    args = parser.parse_args()
    env = {**os.environ, "HYPOTHESIS_PROFILE": args.profile, "LOWLABEL_SWEEP_REPORT": str(RESULT)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q",
                           "tests/reliability"], cwd=REPO, env=env)
    payload = json.loads(RESULT.read_text())
    payload["pytest_exit_status"] = done.returncode
    write_text(RESULT, json.dumps(payload, indent=2))
    text = DOC.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    note = (f"\n`python benchmarks/bad_input_sweep.py --profile {args.profile}` (pytest exit status "
            f"{done.returncode}):\n\n{table(payload)}\n")
    write_text(DOC, text[:start] + note + text[stop:])
    print(table(payload))
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
