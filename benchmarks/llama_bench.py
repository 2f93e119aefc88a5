"""Reading t/s out of `vkrama bench --json` and out of raw `llama-bench -o json`.

Stage: benchmarks (not part of vkrama). Parses independently of vkrama's own parser, so the
fidelity comparison checks vkrama's reading of llama-bench rather than reusing it. Must not
run anything.
"""

from __future__ import annotations

import json
from typing import Any

from benchmarks.harness import SideFailed


def test_name(entry: dict[str, Any]) -> str:
    n_prompt, n_gen = int(entry.get("n_prompt", 0)), int(entry.get("n_gen", 0))
    if n_prompt and n_gen:
        return f"pp{n_prompt}+tg{n_gen}"
    return f"pp{n_prompt}" if n_prompt else f"tg{n_gen}"


def raw_tps(stdout: str, what: str) -> dict[str, float]:
    """{test: avg t/s} from llama-bench's JSON array (a banner before it is skipped)."""
    start = stdout.find("[")
    try:
        entries = json.loads(stdout[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        entries = None
    if not isinstance(entries, list) or not entries:
        raise SideFailed(f"{what}: no llama-bench JSON in its output")
    return {test_name(entry): float(entry["avg_ts"]) for entry in entries}


def vkrama_tps(stdout: str, what: str) -> dict[str, float]:
    """{test: t/s} from `vkrama bench --json` rows; a failed cell fails the side."""
    try:
        rows = json.loads(stdout)
    except json.JSONDecodeError:
        raise SideFailed(f"{what}: --json printed no JSON") from None
    found: dict[str, float] = {}
    for row in rows:
        if row.get("status") != "ok" or row.get("tps") is None:
            raise SideFailed(
                f"{what}: cell {row.get('backend')} {row.get('status')}: {row.get('reason', '')}"
            )
        found[str(row["test"])] = float(row["tps"])
    if not found:
        raise SideFailed(f"{what}: no rows")
    return found


def ramalama_tps(stdout: str, what: str) -> dict[str, float]:
    """{test: t/s} from `ramalama bench --format json` (llama-bench's own entries)."""
    return raw_tps(stdout, what)
