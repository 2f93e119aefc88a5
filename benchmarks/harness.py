"""The measuring loop every comparison shares: warm-up, then A B A B pairs, then medians.

Stage: benchmarks (not part of vkrama). Runs callables it is given and summarises what they
return; must not know what a comparison measures, and must not judge a goal itself (each
comparison states its goal and whether it was met).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# A measurement returns one number per metric, e.g. {"s": 0.21} or {"pp512": 61.0, "tg128": 14.2}.
Measure = Callable[[], Mapping[str, float]]
# One llama-bench run here takes seconds to a minute; a run past this is stuck (a container
# left in "Created" by a podman that hangs under load was seen), and counts as a failure.
BENCH_TIMEOUT_S = 600


class SideFailed(Exception):
    """One side of a comparison could not be measured (its command failed)."""


class PeerUnavailable(SideFailed):
    """The reference side is missing here (ramalama not installable, no curl, …)."""


@dataclass(frozen=True)
class Stats:
    """Median and range of one metric over the measured runs (warm-up excluded)."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        return cls(statistics.median(values), min(values), max(values), tuple(values))

    def to_dict(self) -> dict[str, object]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "n": len(self.values),
            "values": list(self.values),
        }


@dataclass
class Row:
    """One line of the results table: a metric of A against a metric of B, and the goal."""

    comparison: str  # e.g. "bench fidelity"
    case: str  # e.g. "cpu tg128"
    unit: str  # "t/s", "s", "MB", "MB/s", "MiB"
    a_label: str
    a: Stats | None
    b_label: str = ""
    b: Stats | None = None
    ratio: float | None = None  # defined by the goal, e.g. A/B t/s, or B - A seconds
    ratio_text: str = ""  # how the ratio is shown, e.g. "0.99×" or "+0.12 s"
    goal: str = ""  # e.g. "ratio ≥ 0.98"; empty: reported, no goal
    met: bool | None = None  # None: no goal, or not judged
    note: str = ""
    command: str = ""  # the one command that reproduces this row

    def to_dict(self) -> dict[str, object]:
        return {
            "comparison": self.comparison,
            "case": self.case,
            "unit": self.unit,
            "a_label": self.a_label,
            "a": self.a.to_dict() if self.a else None,
            "b_label": self.b_label,
            "b": self.b.to_dict() if self.b else None,
            "ratio": self.ratio,
            "ratio_text": self.ratio_text,
            "goal": self.goal,
            "met": self.met,
            "note": self.note,
            "command": self.command,
        }


@dataclass
class Outcome:
    """What a comparison hands back: its rows, and whether vkrama's side broke."""

    rows: list[Row] = field(default_factory=list)
    vkrama_failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Sides:
    """Per-metric values of A and B over the measured pairs; the error of a side that failed."""

    a: dict[str, list[float]] = field(default_factory=dict)
    b: dict[str, list[float]] = field(default_factory=dict)
    a_error: str = ""
    b_error: str = ""

    def stats(self, side: str, metric: str) -> Stats | None:
        values = (self.a if side == "a" else self.b).get(metric)
        return Stats.of(values) if values else None


def alternate(a: Measure, b: Measure | None, pairs: int, warmup: int = 1) -> Sides:
    """Run `warmup` unrecorded pairs, then `pairs` recorded A B pairs, alternating.

    Alternating spreads slow drifts (other load, thermal, page cache) over both sides. A side
    that fails stops being run; the other one goes on alone, so a missing peer never hides
    vkrama's numbers and a broken vkrama never hides the peer's.
    """
    sides = Sides()
    for index in range(warmup + pairs):
        record = index >= warmup
        for name, measure in (("a", a), ("b", b)):
            if measure is None or (sides.a_error if name == "a" else sides.b_error):
                continue
            try:
                values = measure()
            except SideFailed as failed:
                setattr(sides, f"{name}_error", str(failed) or type(failed).__name__)
                continue
            if record:
                target = sides.a if name == "a" else sides.b
                for metric, value in values.items():
                    target.setdefault(metric, []).append(value)
    return sides


@dataclass(frozen=True)
class Ran:
    """A finished command: wall seconds and its output."""

    seconds: float
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    what: str = "",
    peer: bool = False,
    cwd: Path | None = None,
) -> Ran:
    """Run a command, timing its wall clock; a non-zero exit raises SideFailed (PeerUnavailable
    for a peer's missing executable)."""
    full_env = {**os.environ, **(env or {})}
    started = time.perf_counter()
    try:
        process = subprocess.Popen(
            list(argv),
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
    except FileNotFoundError as missing:
        cls = PeerUnavailable if peer else SideFailed
        raise cls(f"{what or argv[0]}: {missing}") from None
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM first: vkrama treats it as Ctrl-C and removes its container; a SIGKILL
        # would leave one behind.
        process.terminate()
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        raise SideFailed(f"{what or argv[0]}: no answer within {timeout:.0f} s") from None
    done = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SideFailed(f"{what or argv[0]} exited {done.returncode}: {' | '.join(tail)}")
    return Ran(seconds, done.stdout, done.stderr)


def ratio_row(
    row: Row,
    goal_min: float | None,
    *,
    invert: bool = False,
) -> Row:
    """Fill ratio = A/B median (B/A with `invert`, for times) and judge it against goal_min."""
    if row.a is None or row.b is None or row.a.median == 0 or row.b.median == 0:
        return row
    ratio = row.b.median / row.a.median if invert else row.a.median / row.b.median
    row.ratio = ratio
    row.ratio_text = f"{ratio:.3f}×"
    if goal_min is not None:
        row.met = ratio >= goal_min
    return row
