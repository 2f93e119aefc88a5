"""The results file (JSON) and the markdown table docs/benchmarks.md shows.

Stage: benchmarks (not part of vkrama). Turns rows into text; must not measure anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.harness import Row, Stats

DIGITS = {"t/s": 1, "s": 3, "MB": 0, "MB/s": 0, "MiB": 3}


def _number(value: float, unit: str) -> str:
    return f"{value:.{DIGITS.get(unit, 2)}f}"


def cell(stats: Stats | None, unit: str) -> str:
    """`median (min–max) unit`, or just the value for a single sample."""
    if stats is None:
        return "—"
    median = _number(stats.median, unit)
    if len(stats.values) == 1:
        return f"{median} {unit}"
    return f"{median} ({_number(stats.low, unit)}–{_number(stats.high, unit)}) {unit}"


def verdict(row: Row) -> str:
    if not row.goal:
        return "—"
    if row.met is None:
        return "not judged"
    return "met" if row.met else "**missed**"


def table(rows: Sequence[Row]) -> str:
    columns = [
        "comparison",
        "case",
        "A",
        "A: median (min–max)",
        "B",
        "B: median (min–max)",
        "ratio",
        "goal",
        "result",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    row.comparison,
                    row.case,
                    row.a_label,
                    cell(row.a, row.unit),
                    row.b_label or "—",
                    cell(row.b, row.unit),
                    row.ratio_text or "—",
                    row.goal or "—",
                    verdict(row),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def markdown(meta: Mapping[str, object], rows: Sequence[Row], notes: Sequence[str]) -> str:
    machine = meta["machine"]
    assert isinstance(machine, dict)
    parts = [
        f"# vkrama benchmarks, {meta['date']}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']} RAM, "
        f"{machine['os']}, kernel {machine['kernel']}, GPU: {machine['gpu']}; "
        f"podman {machine['podman']}, vkrama {machine['vkrama']}, ramalama {machine['ramalama']}, "
        f"commit {machine['commit']}.",
        "",
        f"Mode: {meta['mode']} ({meta['pairs']} measured A B pairs after {meta['warmup']} "
        f"warm-up pair(s), alternating). Load average (1 5 15 min) before: "
        f"{meta['load_before']}, after: {meta['load_after']}. Wall time {meta['seconds']:.0f} s.",
        "",
        table(rows),
    ]
    notes = [f"{row.comparison}, {row.case}: {row.note}" for row in rows if row.note] + list(notes)
    if notes:
        parts += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    failures = meta.get("vkrama_failures") or []
    assert isinstance(failures, list)
    if failures:
        parts += ["", "vkrama failures:", ""] + [f"- {failure}" for failure in failures]
    return "\n".join(parts) + "\n"


def write(
    directory: Path,
    stem: str,
    meta: Mapping[str, object],
    rows: Sequence[Row],
    notes: Sequence[str],
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data = {**meta, "rows": [row.to_dict() for row in rows], "notes": list(notes)}
    json_path = directory / f"{stem}.json"
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    md_path = directory / f"{stem}.md"
    md_path.write_text(markdown(meta, rows, notes))
    return json_path, md_path
