"""llama-bench's `-o json` output read into measurements.

Stage: after a bench cell's container exits. Pure: text in, `Measurement`s out; raises
`ValueError` with a short reason on output that is not llama-bench JSON (the runner turns
that into a failed cell).
"""

from __future__ import annotations

import json
from typing import Any

from vkrama.results.records import Measurement, test_name


def parse(stdout: str, flash_attn_varied: bool = False) -> tuple[list[Measurement], list[Any]]:
    """(measurements, the raw JSON array) from llama-bench's stdout."""
    text = stdout.strip()
    # Some builds print a banner line before the array; the array is what counts.
    start = text.find("[")
    if start < 0:
        raise ValueError("llama-bench printed no JSON array")
    try:
        raw = json.loads(text[start:])
    except json.JSONDecodeError as error:
        raise ValueError(f"llama-bench output is not valid JSON ({error.msg})") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError("llama-bench printed no results")
    measurements = []
    for entry in raw:
        if not isinstance(entry, dict) or "avg_ts" not in entry:
            raise ValueError("llama-bench result lacks avg_ts")
        n_prompt = int(entry.get("n_prompt", 0))
        n_gen = int(entry.get("n_gen", 0))
        depth = int(entry.get("n_depth", 0) or 0)  # builds before -d have no such field
        fa = _flash_attn_word(entry.get("flash_attn")) if flash_attn_varied else None
        measurements.append(
            Measurement(
                test=test_name(n_prompt, n_gen, fa, depth),
                n_prompt=n_prompt,
                n_gen=n_gen,
                tps=float(entry["avg_ts"]),
                tps_stddev=float(entry.get("stddev_ts", 0.0)),
                samples=tuple(float(s) for s in entry.get("samples_ts", ())),
                backends=str(entry.get("backends", "")),
                gpu_info=str(entry.get("gpu_info", "")),
                n_depth=depth,
            )
        )
    return measurements, raw


def _flash_attn_word(value: Any) -> str:
    # Older builds report a bool, newer ones an int or "on"/"off"/"auto".
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return {0: "off", 1: "on"}.get(value, "auto")
    return str(value)
