"""Latency targets: parsing `--slo`, judging a level against it, and the rate sweep's steps
and end (the real sweep is end to end in test_serve_bench_e2e.py)."""

from __future__ import annotations

import pytest

from vkrama.bench import slo
from vkrama.bench.latency import RequestTrace
from vkrama.bench.slo import Objective, next_rate
from vkrama.errors import ExitStatus, VkramaError
from vkrama.results.levels import Capacity, LevelStats, Spread, capacity


def sustained(tried: list[tuple[float, bool]]) -> float | None:
    found = capacity(tried)
    return None if found is None else found.rate


def level(ttft_p90: float, itl_p90: float, failures: int = 0) -> LevelStats:
    ttft = Spread(ttft_p90 / 2, ttft_p90, ttft_p90 * 2, ttft_p90 / 2)
    itl = Spread(itl_p90 / 2, itl_p90, itl_p90 * 2, itl_p90 / 2)
    return LevelStats(0, 10, failures, 5.0, ttft, itl, ttft, None, None, 10.0, 2.0, 100, 1000)


def test_an_slo_parses_into_targets_in_milliseconds() -> None:
    assert slo.parse("ttft_p90=500ms, itl_p99=0.05s,e2e_p50=2s") == (
        Objective("ttft", 90, 500.0), Objective("itl", 99, 50.0), Objective("e2e", 50, 2000.0),
    )  # fmt: skip
    assert str(Objective("ttft", 90, 500.0)) == "ttft_p90=500ms"


@pytest.mark.parametrize("text", ["ttft=500ms", "ttft_p95=1s", "tpot_p90=5ms", "ttft_p90=5", ""])
def test_an_slo_that_is_not_figure_percentile_limit_is_a_usage_error(text: str) -> None:
    with pytest.raises(VkramaError) as caught:
        slo.parse(text)
    assert caught.value.status == ExitStatus.USAGE


TARGETS = slo.parse("ttft_p90=500ms,itl_p90=50ms")


@pytest.mark.parametrize(
    ("stats", "why"),
    [
        (level(400, 40), []),
        (level(500, 50), []),  # at the limit is within it
        (level(600, 40), ["ttft p90 600 ms > 500 ms"]),
        (level(900, 70), ["ttft p90 900 ms > 500 ms", "itl p90 70 ms > 50 ms"]),
        (level(100, 10, failures=1), ["1 of 10 requests failed"]),
    ],
    ids=["within", "at-the-limit", "ttft-over", "both-over", "a-failed-request-breaks-it"],
)
def test_a_level_meets_the_slo_only_within_every_target(stats: LevelStats, why: list[str]) -> None:
    assert slo.broken(stats, TARGETS) == why


def sweep(breaks_at: float, start: float = 1.0) -> list[float]:
    """The rates a sweep tries against a server that holds the SLO below `breaks_at`."""
    tried: list[tuple[float, bool]] = []
    while (rate := next_rate(tried, start)) is not None:
        tried.append((rate, rate < breaks_at))
    return [rate for rate, _ in tried]


def test_the_sweep_doubles_until_the_slo_breaks_then_narrows_and_stops() -> None:
    rates = sweep(breaks_at=5.0)
    assert rates[:4] == [1.0, 2.0, 4.0, 8.0]
    assert len(rates) <= slo.SWEEP_LEVELS and len(set(rates)) == len(rates)
    tried = [(r, r < 5.0) for r in rates]
    best = sustained(tried)
    assert best is not None and 4.0 <= best < 5.0
    broke = min(r for r, met in tried if not met)
    assert broke / best <= 1 + slo.SWEEP_PRECISION


def test_a_server_that_breaks_at_the_start_is_swept_downwards_and_may_sustain_nothing() -> None:
    assert sweep(breaks_at=0.3)[:3] == [1.0, 0.5, 0.25]
    best = sustained([(r, r < 0.3) for r in sweep(breaks_at=0.3)])
    assert best is not None and 0.25 <= best < 0.3
    never = sweep(breaks_at=0.0)
    assert never == [1.0, 0.5, 0.25, 0.125, 0.0625]
    assert sustained([(r, False) for r in never]) is None


def test_a_server_that_never_breaks_stops_after_the_most_levels_with_a_lower_bound() -> None:
    rates = sweep(breaks_at=1e9, start=2.0)
    assert rates == [2.0 * 2**k for k in range(slo.SWEEP_LEVELS)]
    # Nothing broke: the capacity is only known to be at least the last rate.
    assert capacity([(r, True) for r in rates]) == Capacity(256.0, at_least=True)
    assert capacity([(1.0, True), (2.0, False)]) == Capacity(1.0, at_least=False)
    assert Capacity(256.0, at_least=True).said() == "at least 256 requests/s"


def test_capacity_ignores_a_rate_that_held_above_one_that_broke() -> None:
    # Noise: 8/s held after 4/s broke; the stack does not sustain 8/s.
    assert capacity([(1.0, True), (2.0, True), (4.0, False), (8.0, True)]) == Capacity(2.0, False)


def _trace(ttft: float, gaps: list[float], end: float | None = None) -> RequestTrace:
    chunks = [ttft]
    for gap in gaps:
        chunks.append(chunks[-1] + gap)
    return RequestTrace(tuple(chunks), end if end is not None else chunks[-1], len(chunks), 9)


@pytest.mark.parametrize(
    ("trace", "good"),
    [
        (_trace(0.4, [0.02] * 9), True),
        (_trace(0.5, [0.02] * 9), True),  # at the limit is within it
        (_trace(0.6, [0.02] * 9), False),
        # Its own p90 gap is 0.08 s: over 50 ms, though most gaps are short.
        (_trace(0.1, [0.01] * 8 + [0.08, 0.08]), False),
        (_trace(0.1, [0.01] * 8, end=2.5), False),  # e2e over 2 s
        (RequestTrace((0.1,), error="HTTP 500: boom"), False),
    ],
    ids=["within", "ttft-at-its-limit", "ttft-over", "own-itl-p90-over", "e2e-over", "failed"],
)
def test_a_request_counts_toward_goodput_only_within_every_target(
    trace: RequestTrace, good: bool
) -> None:
    # vLLM's and GenAI-Perf's goodput judges each request on its own figures.
    targets = slo.parse("ttft_p90=500ms,itl_p90=50ms,e2e_p99=2s")
    assert slo.good(trace, targets) is good
