"""The sampler: a cell's power or energy counters read over time, around the cell.

Stage: bench.run's second witness (beside `hostload`), its timed half: `PowerWatch` reads
the cell's counters (`hardware.power`) with wall-clock stamps, first in windows of `IDLE_S`
with nothing running until the idle draw settles (two windows in a row within `SETTLE_W` or
`SETTLE_FRACTION`: a GPU that has just finished the previous cell still draws well above
idle for seconds; on an H100 the vulkan cell after cuda's began at 133 W against 72 W; at
most `SETTLE_S`), then every `SAMPLE_S` while the cell runs, on a thread of its own, into
the `Trace` that `bench.energy` does the arithmetic on. `of_levels` does the same around a
serving cell. Must not print, nor talk to podman.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from vkrama.bench.energy import SAMPLE_S, Trace, Window, idle_watts, no_counter, per_test
from vkrama.hardware.power import Counter

if TYPE_CHECKING:
    from vkrama.hardware.power import PowerCounters
    from vkrama.results.records import CellResult

IDLE_S = 1.0
SETTLE_S = 20.0  # the most a cell waits for the idle draw to settle
SETTLE_W, SETTLE_FRACTION = 2.0, 0.05  # two idle windows this close: settled
Clock = Callable[[], float]


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
    # How long the idle read has taken, and the wait between its reads: real time here,
    # a fake clock's in tests (the idle read is timed by them alone, never by the host).
    timer: Clock = time.monotonic
    sleep: Callable[[float], None] = time.sleep
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
        began = self.timer()
        before: float | None = None
        while True:
            window: list[tuple[float, tuple[float, ...]]] = []
            start = self.timer()
            while self._read(window) and self.timer() - start < self.idle_s:
                self.sleep(self.interval)
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
            if before is not None and self.timer() - began >= self.settle_s:
                self._floor = floors.get(key)
                if self._floor is None:
                    self._unsettled = (
                        f"the idle draw before the cell had not settled after {self.settle_s:g} "
                        f"s ({before:.1f} W, then {draw:.1f} W), so no J/token above idle"
                    )
                return
            before = draw

    def start(self) -> None:
        """Read the counters every `interval` on a thread of its own until `finish()`."""
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

    def tick(self) -> bool:
        """One read of the running cell's counters, as the thread makes every `interval`
        (tests call it on a fake clock's ticks instead of `start()`); False once a read
        has failed."""
        return self._read(self._busy)

    def _sample(self) -> None:
        while self.tick() and not self._stop.wait(self.interval):
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
