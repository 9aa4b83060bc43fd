"""What `make demo` costs with all eleven methods: every method's quick demo (ready or planned) in one process, in
registry order, with wall and CPU seconds each, the load average around it, and whether it beat its baseline.

`make demo` runs the ready ones only; this script shows how far the eleven would stay from the ten-minute goal.
Other processes on the machine inflate wall time (CPU time much less), hence the load averages in the rows.

    python benchmarks/demo_budget.py [--slugs a,b] [--out runs/demo_budget]
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import time
from pathlib import Path

from _common import write_results
from lowlabel import registry
from lowlabel.engine import runtime as rt


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slugs", default="", help="comma-separated slugs (default: all eleven)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo_budget"))
    args = parser.parse_args()
    slugs = [s for s in args.slugs.split(",") if s] or list(registry.METHODS)
    runtime = rt.init("cpu")
    rows, start = [], time.perf_counter()
    for slug in slugs:
        module = importlib.import_module(f"lowlabel.methods.{slug}.demo")
        load_before, wall0, cpu0 = os.getloadavg()[0], time.perf_counter(), _cpu_seconds()
        result = module.run(quick=True, out=args.out / slug, runtime=runtime)
        rows.append({"slug": slug, "ready": registry.get(slug).ready, "wall_s": round(time.perf_counter() - wall0, 1),
                     "cpu_s": round(_cpu_seconds() - cpu0, 1), "load_before": round(load_before, 2),
                     "load_after": round(os.getloadavg()[0], 2), "wins": bool(result.wins)})
        print(rows[-1], flush=True)
    total = time.perf_counter() - start
    ready_wall = sum(r["wall_s"] for r in rows if r["ready"])
    write_results("demo_budget", rows, notes=f"all {len(rows)} quick demos: {total:.0f} s wall, "
                  f"{sum(r['cpu_s'] for r in rows):.0f} s CPU; the ready ones (what `make demo` runs): "
                  f"{ready_wall:.0f} s wall. Goal: about 600 s on 2 cores.")


if __name__ == "__main__":
    main()
