"""Latency targets (SLOs), whether a level met them, and the rate sweep that finds capacity.

Stage: bench (serving), between the levels of a cell. `--slo ttft_p90=500ms,itl_p90=50ms`
names percentiles of a level's figures and their limits; a level meets the SLO when every
request was answered and every named percentile is within its limit. `--sweep` raises the
request rate until a level breaks the SLO, then narrows between the last rate that met it
and the first that broke it; the highest rate that met it is the stack's capacity
(`results.levels.capacity`). A level's goodput is its requests each within every target,
per second (`good`). Pure:
figures in, verdicts and the next rate out; must not send requests or print.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vkrama import units
from vkrama.bench.latency import RequestTrace
from vkrama.errors import ExitStatus, VkramaError
from vkrama.results.levels import LevelStats, Spread, percentile

FIGURES = {"ttft": "ttft_ms", "itl": "itl_ms", "e2e": "e2e_ms"}
_TERM = re.compile(r"(ttft|itl|e2e)_p(50|90|99)=(.+)")  # the limit: units.seconds' grammar
SWEEP_START = 1.0  # requests/s, unless --request-rate names where to start
SWEEP_FACTOR = 2.0  # each level's rate over the last one's, until the SLO breaks
SWEEP_LEVELS = 8  # at most, the narrowing included
SWEEP_PRECISION = (
    0.25  # stop narrowing once the rate that broke is within 25 % of the one that met it
)
SWEEP_FLOOR = 1 / 16  # going down from the start: no lower than this share of it


@dataclass(frozen=True)
class Objective:
    """One target: the `quantile`-th percentile of `figure` (ttft, itl, e2e) within `limit_ms`."""

    figure: str
    quantile: int
    limit_ms: float

    def __str__(self) -> str:
        return f"{self.figure}_p{self.quantile}={self.limit_ms:g}ms"

    def measured(self, stats: LevelStats) -> float | None:
        spread: Spread | None = getattr(stats, FIGURES[self.figure])
        return None if spread is None else float(getattr(spread, f"p{self.quantile}"))


def parse(text: str) -> tuple[Objective, ...]:
    """`ttft_p90=500ms,itl_p90=50ms` ─► objectives; a usage error for anything else."""
    found = []
    for term in (t.strip() for t in text.split(",") if t.strip()):
        match = _TERM.fullmatch(term)
        if match is None:
            raise VkramaError(
                f"--slo {term!r} is not FIGURE_pQ=LIMIT",
                hint="figures ttft, itl, e2e; percentiles p50, p90, p99; limits with a unit "
                "(500ms, 1.5s), "
                "e.g. --slo ttft_p90=500ms,itl_p90=50ms",
                status=ExitStatus.USAGE,
            )
        figure, quantile, value = match.groups()
        limit = units.seconds(value, f"--slo {figure}_p{quantile}", bare=None) * 1000.0
        found.append(Objective(figure, int(quantile), limit))
    if not found:
        raise VkramaError("--slo names no target", hint="e.g. --slo ttft_p90=500ms",
                          status=ExitStatus.USAGE)  # fmt: skip
    return tuple(found)


def broken(stats: LevelStats, objectives: Sequence[Objective]) -> list[str]:
    """What of the SLO this level broke, one phrase each; [] when it met every target."""
    why = []
    if stats.failures or stats.requests == 0:
        why.append(f"{stats.failures} of {stats.requests} requests failed")
    for objective in objectives:
        value = objective.measured(stats)
        if value is None:
            why.append(f"no {objective.figure} measured")
        elif value > objective.limit_ms:
            why.append(f"{objective.figure} p{objective.quantile} {value:.0f} ms > "
                       f"{objective.limit_ms:g} ms")  # fmt: skip
    return why


def good(trace: RequestTrace, objectives: Sequence[Objective]) -> bool:
    """Whether one request was answered within every target, judged on its own figures:
    its TTFT, its E2E, the `quantile`-th percentile of its own inter-token gaps (vLLM's
    and GenAI-Perf's per-request goodput; they take a request's mean ITL, its TPOT)."""
    if not trace.ok:
        return False
    for objective in objectives:
        if objective.figure == "ttft":
            value = trace.ttft * 1000
        elif objective.figure == "e2e":
            value = (trace.end or 0.0) * 1000
        else:
            gaps = [g * 1000 for g in trace.gaps]
            value = percentile(gaps, objective.quantile) if gaps else 0.0
        if value > objective.limit_ms:
            return False
    return True


def next_rate(tried: Sequence[tuple[float, bool]], start: float = SWEEP_START) -> float | None:
    """The sweep's next rate given the (rate, met the SLO?) levels so far; None: it is over.

    Doubles from `start` while the SLO holds. Once a rate breaks it, tries the geometric
    middle of the highest rate below it that held and the lowest that broke, until they
    are within SWEEP_PRECISION; if even `start` breaks it, halves down to SWEEP_FLOOR of
    it. Never more than SWEEP_LEVELS levels, never a rate twice.
    """
    if not tried:
        return start
    if len(tried) >= SWEEP_LEVELS:
        return None
    broke = [rate for rate, met in tried if not met]
    if not broke:
        return max(rate for rate, _ in tried) * SWEEP_FACTOR
    high = min(broke)
    held = [rate for rate, met in tried if met and rate < high]
    if not held:
        lower = high / SWEEP_FACTOR
        return lower if lower >= start * SWEEP_FLOOR else None
    low = max(held)
    if high / low <= 1 + SWEEP_PRECISION:
        return None
    middle = float(f"{math.sqrt(low * high):.3g}")  # 2.83/s, a rate a reader can name
    return None if any(math.isclose(middle, rate) for rate, _ in tried) else middle
