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
             "Written by `make bench` (each script in benchmarks/ writes results/<name>.json; this file is rendered "
             "from them). Numbers are what was measured on the machine named under each table.", ""]
    for path in sorted((HERE / "results").glob("*.json")):
        data = json.loads(path.read_text())
        rows = data.get("rows", [])
        parts += [f"## {data['name']}", ""]
        if rows:
            keys = list(rows[0])
            parts.append("| " + " | ".join(keys) + " |")
            parts.append("|" + "---|" * len(keys))
            parts += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
            parts.append("")
        if data.get("notes"):
            parts += [data["notes"], ""]
        m = data.get("machine", {})
        parts += [f"_{data.get('date', '')}; {m.get('platform', '')}; torch {m.get('torch', '')}, "
                  f"{m.get('threads', '')} threads; GPU: {m.get('cuda') or 'none'}_", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    (HERE / "RESULTS.md").write_text(render())
    print(f"wrote {HERE / 'RESULTS.md'}")
