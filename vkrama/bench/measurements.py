"""llama-bench's `-o json` output read into measurements.

Stage: after a bench cell's container exits. Pure: text in, `Measurement`s out; raises
`ValueError` with a short reason on output that is not llama-bench JSON (the runner turns
that into a failed cell).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from typing import Any

from vkrama.llama_flags import FLAG, FLAGS
from vkrama.results.records import Measurement, test_name

# llama-bench's JSON fields for the settings a run may sweep, by the flag that sets them.
FLAG_FIELDS = {flag.field: flag.name for flag in FLAGS}


def parse(
    stdout: str, flash_attn_varied: bool = False, cold_reps: int = 0
) -> tuple[list[Measurement], list[Any]]:
    """(measurements, the raw JSON array) from llama-bench's stdout.

    Every row keeps its settings (`Measurement.flags`), and a setting that differs between
    the rows of one run (`-- -ub 128,256` swept it) is part of each row's test name
    ("pp2048 ub=256"): rows that ran differently never share a name. `cold_reps`: the
    first repetitions of each row that ran cold (see `warm`)."""
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
    if not all(isinstance(entry, dict) and "avg_ts" in entry for entry in raw):
        raise ValueError("llama-bench result lacks avg_ts")
    settings = [row_flags(entry) for entry in raw]
    varied = [f for f in FLAG_FIELDS.values() if len({s.get(f) for s in settings}) > 1]
    measurements = []
    for entry, flags in zip(raw, settings, strict=True):
        n_prompt = int(entry.get("n_prompt", 0))
        n_gen = int(entry.get("n_gen", 0))
        depth = int(entry.get("n_depth", 0) or 0)  # builds before -d have no such field
        fa = flags.get("fa") if flash_attn_varied or "fa" in varied else None
        swept = "".join(f" {f}={flags[f]}" for f in varied if f != "fa")
        measured = Measurement(
            test=test_name(n_prompt, n_gen, fa, depth) + swept,
            n_prompt=n_prompt,
            n_gen=n_gen,
            tps=float(entry["avg_ts"]),
            tps_stddev=float(entry.get("stddev_ts", 0.0)),
            samples=tuple(float(s) for s in entry.get("samples_ts", ())),
            backends=str(entry.get("backends", "")),
            gpu_info=str(entry.get("gpu_info", "")),
            n_depth=depth,
            flags=flags,
        )
        measurements.append(warm(measured, cold_reps) if cold_reps else measured)
    return measurements, raw


def warm(measured: Measurement, cold_reps: int) -> Measurement:
    """The row without its first `cold_reps` samples: mean and stddev of the rest.

    A stack that compiles GPU code on first use (ggml's Vulkan backend builds each pipeline
    the first time a shape needs it) can run its first repetition cold: llama-bench's own
    warm-up run does not meet every shape a test does (issue 26: on an H200 the first
    repetition of flash-attention and deep tests ran at a third of the rest). The planner
    asked for `cold_reps` more repetitions than the user did, and those first ones are
    dropped by position, not by judging which sample looks slow: with 3-5 samples no
    outlier test can tell, and a rule that depends on the numbers could also drop a fair
    slow one; the cost is one repetition per test. When too few samples came back (`-r 1`
    given through to llama-bench), each is counted and the row says a cold one is among them."""
    if len(measured.samples) <= cold_reps:
        return replace(measured, cold_counted=True)
    kept = measured.samples[cold_reps:]
    return replace(
        measured,
        tps=statistics.fmean(kept),
        # llama-bench's stddev_ts is the sample standard deviation; 0 for one sample.
        tps_stddev=statistics.stdev(kept) if len(kept) > 1 else 0.0,
        samples=kept,
        cold_samples=measured.samples[:cold_reps],
    )


def row_flags(entry: dict[str, Any]) -> dict[str, str]:
    """One JSON row's settings by flag, as llama-bench's own flags spell the values."""
    flags = {
        flag: str(entry[name]) for name, flag in FLAG_FIELDS.items() if entry.get(name) is not None
    }
    if "fa" in flags:
        flags["fa"] = _flash_attn_word(entry[FLAG["fa"].field])
    return flags


def _flash_attn_word(value: Any) -> str:
    # Older builds report a bool, newer ones an int or "on"/"off"/"auto".
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return {0: "off", 1: "on"}.get(value, "auto")
    return str(value)
