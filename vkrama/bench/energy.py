"""Energy per test: the arithmetic on a trace of a device's own counters.

Stage: bench.run's second witness (beside `hostload`), its pure half: a `Trace` (what
`bench.powerwatch` read around a cell) and each test's `Window` in, `Energy` records out.
`per_test` cuts the trace at each test's counted repetitions and gives its mean watts and
joules per token above the idle draw (`idle_watts`), or why none. Must not print, read a
counter, sleep or talk to podman.

Placing a test in time: llama-bench runs its tests one after another in one process and
prints (and flushes) each test's JSON object as soon as its repetitions end; the container
log stamps each line as it arrives, so a test's counted repetitions are the sum of their
`samples_ns` just before its object's first line (`windows`). Idle draw: the mean over the
window `PowerWatch` read just before the cell, or the lowest settled draw this run has read
on the same counters before, if lower (a plateau of heat is flat too), subtracted from
every test's energy before it is divided by tokens (so J/token is what the work cost above
a GPU sitting idle; the watts shown are the whole draw). A draw that had not settled gives
watts but no J/token, and says so. Resolution: an energy counter is read every `SAMPLE_S`
and interpolated between reads; a power reading is averaged over the reads inside the test.
A test shorter than `MIN_PERIODS` sampling periods, or than `MIN_TEST_S` (ten times what
the log's stamp may lag), gets no figure and a hint: it spans too few reads, or too much of
its window may lie after it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from vkrama.hardware.power import ENERGY, Counter
from vkrama.results.energy import Energy

SAMPLE_S = 0.1
MIN_PERIODS = 5  # a test must span this many sampling periods (0.5 s at SAMPLE_S)
# podman 4.3 polls its log file 4 times a second: a test's end is known up to 0.25 s late,
# and a test 10 times that long has at most a tenth of its window after its end.
LOG_LAG_S = 0.25
MIN_TEST_S = 10 * LOG_LAG_S
NO_COUNTER = "no power counter"
TOO_SHORT_HINT = "raise -r, -p or -n (llama-bench arguments after --) to run it longer"


@dataclass(frozen=True)
class Trace:
    """Every read of a cell's counters: `at` (wall clock, s) and one value per counter."""

    counters: tuple[Counter, ...]
    idle: tuple[tuple[float, tuple[float, ...]], ...]  # before the cell
    busy: tuple[tuple[float, tuple[float, ...]], ...]  # while it ran
    interval: float = SAMPLE_S
    failure: str = ""  # why reading stopped ("" when it did not)
    unsettled: str = ""  # why the idle draw is not a baseline ("" when it settled)
    idle_floor: float | None = None  # a lower settled idle draw read before, in this run
    min_test_s: float = MIN_TEST_S  # the shortest test a figure is given for

    @property
    def name(self) -> str:
        return " + ".join(counter.name for counter in self.counters)


@dataclass(frozen=True)
class Window:
    """A test's counted repetitions: from `start` to `end` (wall clock, s), `tokens` made."""

    start: float
    end: float
    tokens: int


def no_counter(why: str) -> Energy:
    """The record of a test on a device without a readable counter."""
    return Energy(note=f"{NO_COUNTER}: {why}")


def per_test(trace: Trace, windows: Sequence[Window | None]) -> list[Energy]:
    """Each window's mean watts and joules per token above the idle draw; a `None` window
    (its test could not be placed in time) and a window the trace cannot resolve get a note."""
    idle, why = idle_watts(trace)
    if idle is not None and trace.idle_floor is not None:
        idle = min(idle, trace.idle_floor)
    out = []
    for window in windows:
        if window is None:
            out.append(Energy(counter=trace.name, note="its test could not be placed in time"))
        elif idle is None:
            out.append(Energy(counter=trace.name, note=why))
        else:
            out.append(_one(trace, window, idle))
    return out


def idle_watts(trace: Trace) -> tuple[float | None, str]:
    """The draw before the cell, all counters summed; (None, why) where it cannot be told."""
    if trace.failure and len(trace.idle) < 2:
        return None, trace.failure
    if len(trace.idle) < 2 or trace.idle[-1][0] <= trace.idle[0][0]:
        return None, "the idle draw before the cell could not be read"
    total = 0.0
    for index, counter in enumerate(trace.counters):
        series = _series(trace.idle, index, counter)
        if isinstance(series, str):
            return None, series
        if counter.kind == ENERGY:
            (t0, e0), (t1, e1) = series[0], series[-1]
            total += (e1 - e0) / (t1 - t0)
        else:
            total += sum(v for _, v in series) / len(series)
    return total, ""


def _one(trace: Trace, window: Window, idle: float) -> Energy:
    seconds = window.end - window.start
    base = Energy(counter=trace.name, idle_watts=idle, seconds=seconds)
    least = max(MIN_PERIODS * trace.interval, trace.min_test_s)
    if seconds < least:
        return _note(
            base,
            f"too short to measure: its counted repetitions ran {seconds:.2f} s and a figure "
            f"needs {least:.1f} s (the counter is read every {trace.interval:.2f} s, the "
            f"test's end is known to {LOG_LAG_S:.2f} s); {TOO_SHORT_HINT}",
        )
    if trace.failure:
        return _note(base, trace.failure)
    if not trace.busy or window.start < trace.busy[0][0] or window.end > trace.busy[-1][0]:
        return _note(base, "the counter was not read over the whole test")
    joules = 0.0
    for index, counter in enumerate(trace.counters):
        series = _series(trace.busy, index, counter)
        if isinstance(series, str):
            return _note(base, series)
        if counter.kind == ENERGY:
            if series[-1][1] == series[0][1] and trace.busy[-1][0] > trace.busy[0][0]:
                return _note(base, f"{counter.name} did not advance while the cell ran")
            joules += _at(series, window.end) - _at(series, window.start)
        else:
            inside = [v for t, v in series if window.start <= t <= window.end]
            joules += sum(inside) / len(inside) * seconds
    watts = joules / seconds
    if trace.unsettled:
        return Energy(trace.name, watts, idle, None, seconds, trace.unsettled)
    above = joules - idle * seconds
    if above <= 0 or window.tokens <= 0:
        why = f"drew no more than idle ({watts:.1f} W against {idle:.1f} W before the cell)"
        return Energy(trace.name, watts, idle, None, seconds, why)
    return Energy(
        counter=trace.name,
        watts=watts,
        idle_watts=idle,
        joules_per_token=above / window.tokens,
        seconds=seconds,
    )


def _note(energy: Energy, note: str) -> Energy:
    return Energy(energy.counter, None, energy.idle_watts, None, energy.seconds, note)


def _series(
    samples: Sequence[tuple[float, tuple[float, ...]]], index: int, counter: Counter
) -> list[tuple[float, float]] | str:
    """One counter's reads as (at, value); an energy counter unwrapped into a running total.
    A string: why the reads cannot be used (an energy counter that went back)."""
    out: list[tuple[float, float]] = []
    offset = 0.0
    previous: float | None = None
    for at, values in samples:
        value = values[index]
        if counter.kind == ENERGY and previous is not None and value < previous:
            if counter.wrap_joules is None:
                return f"{counter.name} went back from {previous:.3f} J to {value:.3f} J (reset?)"
            offset += counter.wrap_joules  # past its range it starts again from 0
        previous = value
        out.append((at, value + offset))
    return out


def _at(series: list[tuple[float, float]], at: float) -> float:
    """The running total at `at`, interpolated between the reads either side of it."""
    for (t0, v0), (t1, v1) in itertools.pairwise(series):
        if t0 <= at <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (at - t0) / (t1 - t0)
    return series[-1][1] if at >= series[-1][0] else series[0][1]


def windows(
    raw: Sequence[object], stamped: Sequence[tuple[float, str]], cold_reps: int
) -> list[Window | None]:
    """Each llama-bench test's counted repetitions in wall-clock time.

    `raw` is llama-bench's JSON array (one object per test, in the order they ran),
    `stamped` its stdout lines with the time each arrived. A test's object is printed the
    moment its repetitions end; they are the last `samples_ns` before it, the first
    `cold_reps` of them not counted (bench.measurements.warm). None where the stamps cannot
    say (fewer objects arrived than tests: a log the follower lost)."""
    opened = [at for at, line in stamped if line.strip().startswith("{")]
    out: list[Window | None] = []
    for position, entry in enumerate(raw):
        if position >= len(opened) or not isinstance(entry, dict):
            out.append(None)
            continue
        samples = [int(ns) for ns in entry.get("samples_ns") or ()]
        counted = samples[cold_reps:] if len(samples) > cold_reps else samples
        tokens = (int(entry.get("n_prompt", 0)) + int(entry.get("n_gen", 0))) * len(counted)
        end = opened[position]
        out.append(Window(end - sum(counted) / 1e9, end, tokens))
    return out
