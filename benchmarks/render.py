"""Render benchmarks/results/*.json into benchmarks/RESULTS.md (one table per benchmark, as measured)."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render() -> str:
    parts = ["# Benchmark results", "",
             "Rendered by `make bench` from benchmarks/results/*.json (each script in benchmarks/ writes "
             "results/<name>.json). Numbers are what was measured on the machine named under each table.", ""]
    for path in sorted((HERE / "results").glob("*.json")):
        data = json.loads(path.read_text())
        rows = data.get("rows", [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            rows = []  # a result file of another shape (a demo's per-seed record): listed by name only
        name = data.get("name", path.stem)  # a file kept beside its rerun (x_before_fix.json) shares its name
        parts += [f"## {name}" + ("" if name == path.stem else f" ({path.name})"), ""]
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))  # every column any row has, in first-seen order
            parts.append("| " + " | ".join(keys) + " |")
            parts.append("|" + "---|" * len(keys))
            parts += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
            parts.append("")
        if data.get("notes"):
            notes = data["notes"]
            parts += [notes if isinstance(notes, str) else json.dumps(notes), ""]
        m = data.get("machine", {})
        parts += [f"_{data.get('date', '')}; {m.get('platform', '')}; torch {m.get('torch', '')}, "
                  f"{m.get('threads', '')} threads; GPU: {m.get('cuda') or 'none'}_", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    (HERE / "RESULTS.md").write_text(render())
    print(f"wrote {HERE / 'RESULTS.md'}")
