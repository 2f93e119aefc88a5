"""Energy per test: the device's own counter sampled around a cell, and each test's share.

Stage: bench.run's second witness (beside `hostload`): `PowerWatch` samples the cell's
counters (`hardware.power`) with wall-clock stamps, first for `IDLE_S` with nothing running
(the idle draw), then while the cell runs; `per_test` then cuts the trace at each test's
counted repetitions and gives its mean watts and joules per token. Must not print, nor talk
to podman; the arithmetic is pure (a `Trace` in, `Energy` records out).
Over 300 lines because the sampler and the arithmetic share one `Trace` and its
resolution limits, and the idle draw's settling is judged by the `idle_watts` both use.

Placing a test in time: llama-bench runs its tests one after another in one process and
prints (and flushes) each test's JSON object as soon as its repetitions end; the container
log stamps each line as it arrives, so a test's counted repetitions are the sum of their
`samples_ns` just before its object's first line. Idle draw: the mean over `IDLE_S` just
before the cell starts, once it has settled (two windows in a row within `SETTLE_W` or
`SETTLE_FRACTION`: a GPU that has just finished the previous cell still draws well above
idle for seconds; on an H100 the vulkan cell after cuda's began at 133 W against 72 W), or
the lowest settled draw this run has read on the same counters before, if lower (a plateau
of heat is flat too), subtracted from every test's energy before it is divided by tokens
(so J/token is what the work cost above a GPU sitting idle; the watts shown are the whole
draw). A draw that has not settled within `SETTLE_S` gives watts but no J/token, and says
so. Resolution: an energy counter is read every `SAMPLE_S` and interpolated between reads;
a power reading is averaged over the reads inside the test. A test shorter than
`MIN_PERIODS` sampling periods, or than `MIN_TEST_S` (ten times what the log's stamp may
lag), gets no figure and a hint: it spans too few reads, or too much of its window may lie
after it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from vkrama.hardware.power import ENERGY, Counter
from vkrama.results.energy import Energy

if TYPE_CHECKING:
    from vkrama.hardware.power import PowerCounters
    from vkrama.results.records import CellResult

SAMPLE_S = 0.1
IDLE_S = 1.0
SETTLE_S = 20.0  # the most a cell waits for the idle draw to settle
SETTLE_W, SETTLE_FRACTION = 2.0, 0.05  # two idle windows this close: settled
MIN_PERIODS = 5  # a test must span this many sampling periods (0.5 s at SAMPLE_S)
# podman 4.3 polls its log file 4 times a second: a test's end is known up to 0.25 s late,
# and a test 10 times that long has at most a tenth of its window after its end.
LOG_LAG_S = 0.25
MIN_TEST_S = 10 * LOG_LAG_S
NO_COUNTER = "no power counter"
TOO_SHORT_HINT = "raise -r, -p or -n (llama-bench arguments after --) to run it longer"
Clock = Callable[[], float]


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


@dataclass
class PowerWatch:
    """Around one cell: `idle()` before it starts, `start()` when it starts, `finish()`."""

    counters: tuple[Counter, ...]
    interval: float = SAMPLE_S
    idle_s: float = IDLE_S
    settle_s: float = SETTLE_S
    # the lowest settled idle draw per set of counters, shared by the cells of one run
    floors: dict[str, float] | None = None
    clock: Clock = time.time  # wall clock: the container log's stamps are wall clock too
    _idle: list[tuple[float, tuple[float, ...]]] = field(default_factory=list)
    _busy: list[tuple[float, tuple[float, ...]]] = field(default_factory=list)
    _failure: str = ""
    _unsettled: str = ""
    _floor: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def idle(self) -> None:
        """Read the counters in windows of `idle_s` with nothing of ours running, until two
        windows in a row agree (blocks `idle_s` twice at least, `settle_s` at most); the
        last window is the idle draw."""
        began = time.monotonic()
        before: float | None = None
        while True:
            window: list[tuple[float, tuple[float, ...]]] = []
            start = time.monotonic()
            while self._read(window) and time.monotonic() - start < self.idle_s:
                time.sleep(self.interval)
            self._read(window)
            self._idle = window
            draw, _ = idle_watts(Trace(self.counters, tuple(window), ()))
            if draw is None or self._failure:
                return  # idle_watts says why when the trace is read
            floors = self.floors if self.floors is not None else {}
            key = " + ".join(counter.name for counter in self.counters)
            if before is not None and abs(draw - before) <= max(SETTLE_W, SETTLE_FRACTION * before):
                floors[key] = min(draw, floors.get(key, draw))
                self._floor = floors[key] if floors[key] < draw else None
                return
            if before is not None and time.monotonic() - began >= self.settle_s:
                self._floor = floors.get(key)
                if self._floor is None:
                    self._unsettled = (
                        f"the idle draw before the cell had not settled after {self.settle_s:g} "
                        f"s ({before:.1f} W, then {draw:.1f} W), so no J/token above idle"
                    )
                return
            before = draw

    def start(self) -> None:
        self._thread = threading.Thread(target=self._sample, name="vkrama-power", daemon=True)
        self._thread.start()

    def finish(self) -> Trace:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._read(self._busy)
        return Trace(
            self.counters,
            tuple(self._idle),
            tuple(self._busy),
            self.interval,
            self._failure,
            self._unsettled,
            self._floor,
        )

    def _sample(self) -> None:
        while self._read(self._busy) and not self._stop.wait(self.interval):
            pass

    def _read(self, into: list[tuple[float, tuple[float, ...]]]) -> bool:
        if self._failure:
            return False
        try:
            values = tuple(counter.read() for counter in self.counters)
        except (OSError, ValueError) as error:
            self._failure = f"reading the counter failed mid-cell: {error}"
            return False
        except Exception as error:  # NVML's own errors: the reason, never a traceback
            self._failure = f"reading the counter failed mid-cell: {type(error).__name__}"
            return False
        into.append((self.clock(), values))
        return True


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


def of_levels(
    power: PowerCounters | None,
    gpus: tuple[int, ...],
    run: Callable[[list[tuple[float, float]]], CellResult],
) -> CellResult:
    """A serving cell run with its counters read around it: the idle draw before `run`
    starts the server, then each level's span that `run` appends (wall clock, its warm-up
    left out) cut from the trace; J/token is per output token."""
    counters, why = power.for_cell(gpus) if power is not None else ((), "")
    meter = PowerWatch(counters) if counters else None
    if meter is not None:
        meter.idle()
        meter.start()
    spans: list[tuple[float, float]] = []
    try:
        result = run(spans)
    finally:
        trace = meter.finish() if meter is not None else None
    levels = result.serving
    if power is None or not levels:
        return result
    if trace is None:
        found = [no_counter(why)] * len(levels)
    else:
        cut = [Window(a, b, s.output_tokens) for (a, b), s in zip(spans, levels, strict=False)]
        found = per_test(trace, [*cut, *[None] * (len(levels) - len(cut))])
    return replace(
        result, serving=tuple(replace(s, energy=e) for s, e in zip(levels, found, strict=True))
    )
