"""Open-loop load: arrival schedules, their dispatch on a fake clock, the rate the generator
refuses, and the serving flags that contradict each other (the real sends are end to end
in test_serve_bench_e2e.py)."""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vkrama.bench.arrivals import (
    Pace,
    can_send,
    check_rate,
    dispatch,
    fell_behind,
    parse_rates,
    realized_rate,
    schedule,
)
from vkrama.bench.latency import RequestTrace, brief, summarize
from vkrama.errors import ExitStatus, VkramaError


def test_poisson_arrivals_have_the_rate_as_mean_and_exponential_spread() -> None:
    times = schedule(Pace(4.0), requests=20_000)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Exponential gaps of rate 4: mean 0.25 s, standard deviation equal to the mean,
    # a median of ln 2 / 4; 20000 draws put each within a few percent.
    assert statistics.fmean(gaps) == pytest.approx(0.25, rel=0.03)
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.05)
    assert statistics.median(gaps) == pytest.approx(math.log(2) / 4, rel=0.05)
    # Counts per second are Poisson: variance equal to the mean.
    per_second = [0] * math.ceil(times[-1])
    for t in times:
        per_second[int(t)] += 1
    assert statistics.fmean(per_second) == pytest.approx(4.0, rel=0.03)
    assert statistics.pvariance(per_second) == pytest.approx(4.0, rel=0.1)


def test_every_stack_gets_the_same_arrivals_and_every_level_its_own() -> None:
    assert schedule(Pace(2.0), 50) == schedule(Pace(2.0), 50)
    assert schedule(Pace(2.0), 50) != schedule(Pace(2.0), 50, seed="another")
    # One seed for every level gave every level the same first gaps (issue 31): scaled to
    # one rate, the levels' schedules now differ.
    one, two = schedule(Pace(1.0), 8), schedule(Pace(2.0), 8)
    assert [2 * t for t in two] != pytest.approx(one)


@pytest.mark.parametrize("rate", [0.5, 1.0, 3.7, 40.0])
@pytest.mark.parametrize("requests", [8, 16, 32, 64, 200])
def test_a_level_of_n_requests_at_rate_r_offers_r(rate: float, requests: int) -> None:
    # The reproduction: at 1/s the old schedule printed 8 2.51, 16 1.49, 32 1.2,
    # 64 1.14, 200 1.11 for (N-1) / last send. Every level is now its label's rate.
    times = schedule(Pace(rate), requests)
    assert len(times) == requests and times[0] == 0.0 and times == sorted(times)
    assert (requests - 1) / times[-1] == pytest.approx(rate, rel=1e-9)
    assert realized_rate(times) == pytest.approx(rate, rel=1e-9)


def test_poisson_sends_between_the_ends_are_uniform_as_a_conditioned_poisson_process() -> None:
    # Given its count, a Poisson process puts its arrivals uniformly on the span: with one
    # send between the first (0) and the last (2 s at 1/s), that send is uniform on (0, 2):
    # mean 1, variance 4/12, a quarter of the draws in each half second.
    middles = [schedule(Pace(1.0), 3, seed=str(n))[1] for n in range(20_000)]
    assert all(0.0 < m < 2.0 for m in middles)
    assert statistics.fmean(middles) == pytest.approx(1.0, abs=0.02)
    assert statistics.pvariance(middles) == pytest.approx(4 / 12, rel=0.05)
    quarters = [sum(1 for m in middles if q / 2 <= m < (q + 1) / 2) for q in range(4)]
    assert all(q == pytest.approx(5000, rel=0.06) for q in quarters), quarters


@pytest.mark.parametrize(
    ("pace", "requests", "duration", "expected"),
    [
        (Pace(2.0, "constant"), 4, None, [0.0, 0.5, 1.0, 1.5]),
        (Pace(2.0, "constant"), None, 2.0, [0.0, 0.5, 1.0, 1.5]),
        (Pace(2.0, "constant"), 3, 10.0, [0.0, 0.5, 1.0]),
        (Pace(math.inf), 3, None, [0.0, 0.0, 0.0]),
    ],
    ids=["constant-by-count", "constant-by-duration", "count-ends-before-duration",
         "a-burst-sends-everything-at-once"],
)  # fmt: skip
def test_schedules_end_at_their_count_or_duration(
    pace: Pace, requests: int | None, duration: float | None, expected: list[float]
) -> None:
    assert schedule(pace, requests, duration) == expected


@pytest.mark.parametrize(("rate", "duration", "count"), [(5.0, 400.0, 2000), (1.0, 8.0, 8),
                         (0.3, 10.0, 3), (0.01, 5.0, 1)])  # fmt: skip
def test_a_poisson_level_by_duration_sends_rate_times_duration_at_its_rate(
    rate: float, duration: float, count: int
) -> None:
    # Counting what a random schedule put before the end made the count a draw, a request
    # high on average (the first goes at 0): it is now rate x duration, at least one.
    times = schedule(Pace(rate), None, duration)
    assert len(times) == count and times[-1] < duration
    if count > 1:
        assert realized_rate(times) == pytest.approx(rate)


class FakeClock:
    """Time moves only when the dispatcher sleeps or a send takes its time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sent: list[float] = []
        self.due: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # As asyncio's: other tasks run meanwhile, and a busy loop wakes it late.
        wake = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, wake)

    async def send(self, due: float) -> None:
        self.sent.append(self.now)
        self.due.append(due)
        await asyncio.sleep(0)  # a real send yields to the loop; it must not hold the pace


def test_dispatch_sends_each_request_at_its_time_without_waiting_for_the_last() -> None:
    clock = FakeClock()
    times = schedule(Pace(3.0), 30)
    lags = asyncio.run(dispatch(times, clock.send, clock.time, clock.sleep))
    assert [t - 100.0 for t in clock.sent] == pytest.approx(times)
    assert [t - 100.0 for t in clock.due] == pytest.approx(times)
    assert lags == pytest.approx([0.0] * 30)


def test_dispatch_reports_how_late_a_busy_generator_sent() -> None:
    clock = FakeClock()

    async def slow_send(due: float) -> None:
        clock.now += 0.3  # costs the generator 0.3 s of its loop before the next can go
        await clock.send(due)

    lags = asyncio.run(dispatch([0.0, 0.1, 0.2], slow_send, clock.time, clock.sleep))
    # The first send held the loop until 0.3: the second left 0.2 s late, the third 0.1 s;
    # each request still counts its latencies from when it was due (0.1, 0.2 s).
    assert lags == pytest.approx([0.0, 0.2, 0.1])
    assert [d - 100.0 for d in clock.due] == pytest.approx([0.0, 0.1, 0.2])


@pytest.mark.parametrize(
    ("realized", "lag_p99_ms", "late"),
    [(2.0, 3.0, False), (1.81, 49.0, False), (1.79, 3.0, True), (2.0, 51.0, True),
     (None, None, False)],
)  # fmt: skip
def test_a_level_is_marked_late_past_the_stated_bounds(
    realized: float | None, lag_p99_ms: float | None, late: bool
) -> None:
    # The bounds in the docs: p99 lag over 50 ms, or sent more than 10 % below the rate.
    assert fell_behind(2.0, realized, lag_p99_ms) is late


def test_a_late_level_says_so_with_the_rate_it_really_sent() -> None:
    # Two requests due at 0 and 0.5 s whose second left 0.2 s late (that TTFT counts from
    # the due time is checked against a live server in test_serve_stub.py).
    traces = [RequestTrace((0.05, 0.06), 0.07, 2, 10), RequestTrace((0.25, 0.26), 0.27, 2, 10)]
    stats = summarize(traces, 0, 1.0, rate=2.0, arrival="poisson", lags=[0.0, 0.2],
                      realized_rate=1 / 0.7)  # fmt: skip
    assert stats.sent_late and stats.realized_rate == pytest.approx(1.4286, rel=1e-3)
    assert stats.send_lag_ms is not None and stats.send_lag_ms.p99 == pytest.approx(198)
    assert "sent at 1.43/s" in brief(stats) and "generator fell behind" in brief(stats)


def test_a_rate_the_generator_cannot_keep_is_refused_with_the_most_it_can() -> None:
    check_rate(50.0, 0.002)  # 10 % of a core: fine
    check_rate(math.inf, 1.0)  # a burst is not paced
    assert can_send(250.0, 0.002) and not can_send(251.0, 0.002)
    with pytest.raises(VkramaError) as caught:
        check_rate(400.0, 0.002)
    assert caught.value.message == (
        "the load generator cannot send 400 requests/s on this machine: each costs it 2.0 ms "
        "of CPU, 80 % of a core at that rate"
    )
    assert caught.value.hint is not None and caught.value.hint.startswith("at most 250 ")
    assert caught.value.status == ExitStatus.USAGE


@pytest.mark.parametrize("text", ["0", "-1,2", "fast", "", "nan"])
def test_rates_must_be_positive_numbers(text: str) -> None:
    with pytest.raises(VkramaError) as caught:
        parse_rates(text)
    assert caught.value.status == ExitStatus.USAGE


def test_rates_parse_with_inf_for_a_burst() -> None:
    assert parse_rates("0.5,2,inf,2") == (0.5, 2.0, math.inf)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--request-rate", "fast"], "--request-rate 'fast' is not a list of positive rates"),
        (["--duration", "5", "--requests", "8"], "--duration and --requests both end a level"),
        (["--sweep"], "--sweep raises the rate until the SLO breaks: it needs --slo"),
        (["--sweep", "--slo", "ttft_p90=1s", "--request-rate", "inf"], "not inf"),
        (["--request-rate", "inf", "--duration", "5"], "it takes --requests, not --duration"),
        (["--slo", "ttft<1s"], "--slo 'ttft<1s' is not FIGURE_pQ=LIMIT"),
        (["--prefix-tokens", "128"], "--prefix-tokens 128 leaves no room in a prompt of 128"),
        (["--arrival", "gamma"], "Invalid value for '--arrival'"),
        (["--request-rate", "2,1e6"], "--request-rate 1e+06 is more than any machine's load"),
    ],
    ids=["rate-not-a-number", "duration-and-requests", "sweep-without-slo",
         "sweep-from-a-burst", "burst-by-duration", "slo-not-a-target",
         "prefix-as-long-as-the-prompt", "unknown-arrival", "rate-above-any-machine"],
)  # fmt: skip
def test_contradicting_serving_flags_are_usage_errors_before_anything_starts(
    flags: list[str], said: str, vkrama: Callable[..., Any], tmp_path: Path
) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")  # never read: the flags fail first
    done = vkrama("--dry-run", "bench", str(model), "--serve", "--backend", "cpu", *flags)
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr
