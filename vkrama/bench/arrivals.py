"""When each request of an open-loop level is sent: arrival schedules and their dispatch.

Stage: bench (serving), inside the load generator. Requests arrive at a rate the server does
not control (`--request-rate`), as users' do: Poisson arrivals (exponential gaps, the
default), evenly spaced ones (`constant`) or all at once (`burst`, rate `inf`). `schedule`
is pure (rate, pattern, seed ─► send times); `dispatch` sends on a clock it is handed, so
both are tested on a fake clock. Must not print or speak HTTP.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from vkrama.errors import ExitStatus, VkramaError

ARRIVALS = ("poisson", "constant")
BURST = "burst"
ARRIVAL_SEED = 28


@dataclass(frozen=True)
class Pace:
    """How an open-loop level sends: `rate` requests/s (inf: all at once) in `arrival`'s
    pattern."""

    rate: float
    arrival: str = "poisson"

    @property
    def pattern(self) -> str:
        return BURST if math.isinf(self.rate) else self.arrival

    def label(self) -> str:
        return "burst" if math.isinf(self.rate) else f"{self.rate:g}/s {self.arrival}"


def level_seed(pace: Pace, requests: int) -> str:
    """The seed of one level's arrivals: its own (one seed for every level gave every level
    the same first gaps), and the same on every stack, run and machine (a str seeds
    `random` through SHA-512, whatever PYTHONHASHSEED says)."""
    return f"{ARRIVAL_SEED}:{pace.arrival}:{pace.rate!r}:{requests}"


def count_for(pace: Pace, duration: float) -> int:
    """Requests of a level that lasts `duration` seconds at `pace`: rate x duration,
    rounded, at least one. Counting the arrivals a random schedule happens to put before
    the end instead made the count (and so the rate) a draw, one request high on average."""
    return max(1, round(pace.rate * duration))


def schedule(
    pace: Pace, requests: int | None, duration: float | None = None, seed: str | None = None
) -> list[float]:
    """Send times in seconds from the level's start, in order: `requests` of them, or, by
    `duration`, `count_for` it (the fewer of the two when both are given).

    The first request goes at 0 and the last at (N-1)/rate, so the level sends N requests at
    exactly its rate: N-1 gaps whose mean is 1/rate. Constant: every gap 1/rate. Poisson:
    the N-2 sends between are uniform on that span, sorted, which is a Poisson process
    conditioned on its count (given N-2 arrivals in an interval, a Poisson process puts
    them there as independent uniforms; equivalently N-1 exponential gaps rescaled to
    their sum). Drawn unconditioned, 8 requests at 1/s sent at 2.51/s with the old single
    seed, and by chance on any other. Burst: every request at 0. Seeded per level
    (`level_seed`): every stack gets the same arrivals.
    """
    if pace.rate <= 0 or math.isnan(pace.rate):
        raise ValueError(f"rate must be positive, not {pace.rate}")
    if pace.arrival not in ARRIVALS:
        raise ValueError(f"arrival must be one of {ARRIVALS}, not {pace.arrival!r}")
    if requests is None and (duration is None or math.isinf(pace.rate)):
        raise ValueError("a level needs a request count (or, at a finite rate, a duration)")
    if math.isinf(pace.rate):
        return [0.0] * (requests or 0)
    by_time = count_for(pace, duration) if duration is not None else None
    count = min(n for n in (requests, by_time) if n is not None)
    span = (count - 1) / pace.rate
    if count <= 2 or pace.arrival == "constant":
        return [n / pace.rate for n in range(count)]
    rng = random.Random(level_seed(pace, count) if seed is None else seed)
    return [0.0, *sorted(rng.uniform(0.0, span) for _ in range(count - 2)), span]


def realized_rate(sent: Sequence[float]) -> float | None:
    """Requests per second a level really sent: N-1 gaps over the time from its first send
    to its last (`sent`: when each left, any origin); None for fewer than two, or all at
    once."""
    if len(sent) < 2:
        return None
    span = max(sent) - min(sent)
    return (len(sent) - 1) / span if span > 0 else None


async def dispatch(
    times: Sequence[float],
    send: Callable[[float], Awaitable[None]],
    now: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> list[float]:
    """Start `send(due)` at each of `times` (seconds after the first call of `now`; `due`
    is that moment on `now`'s clock, from which the request's latencies count), without
    waiting for earlier sends to end; wait for all of them. Returns how late each one was
    started (seconds): the generator's own lag, which says whether it kept the pace."""
    started = now()
    lags: list[float] = []
    running: list[asyncio.Task[None]] = []
    for at in times:
        wait = at - (now() - started)
        if wait > 0:
            await sleep(wait)
        lags.append(max(0.0, now() - started - at))
        running.append(asyncio.ensure_future(send(started + at)))
    await asyncio.gather(*running)
    return lags


# How late the generator may send before its level is marked as sent late: its p99 lag
# over this, or a realized rate this share below the nominal one. Its latencies count
# from the scheduled send either way (the lateness is queueing the user would have seen).
LATE_MS = 50.0
LATE_SHARE = 0.10


def fell_behind(rate: float, realized: float | None, lag_p99_ms: float | None) -> bool:
    """Whether a level at `rate` (requests/s, finite) was sent late beyond the bounds."""
    slow = realized is not None and realized < rate * (1 - LATE_SHARE)
    return slow or (lag_p99_ms is not None and lag_p99_ms > LATE_MS)


# The load generator runs on one core (one event loop); past this share of it, its own
# queueing would delay the requests it is meant to send on time.
GENERATOR_SHARE = 0.5


# No rate above this is sent on any machine: the generator is one Python event loop, and
# a streamed request costs it some 0.1 ms of CPU at the very least (measured: 0.5-2 ms
# here), so 10,000 requests/s would take all of a core before the server saw any. Refused
# as the flags are read, before a container starts.
RATE_CEILING = 10_000.0


class CannotSend(VkramaError):
    """A level asked for a rate this machine's load generator cannot send: a usage error
    of the whole run, which stores nothing (`bench.session`)."""


def can_send(rate: float, cost_s: float) -> bool:
    """Whether the generator keeps `rate` when each request costs it `cost_s` CPU seconds."""
    return math.isinf(rate) or cost_s <= 0 or rate * cost_s <= GENERATOR_SHARE


def check_rate(rate: float, cost_s: float) -> None:
    """Refuse a rate this machine cannot generate: each request costs the generator `cost_s`
    CPU seconds (measured on the warm-up round), so `rate` needs rate x cost of its core."""
    if can_send(rate, cost_s):
        return
    most = GENERATOR_SHARE / cost_s
    raise CannotSend(
        f"the load generator cannot send {rate:g} requests/s on this machine: each costs it "
        f"{cost_s * 1000:.1f} ms of CPU, {100 * rate * cost_s:.0f} % of a core at that rate",
        hint=f"at most {most:.3g} requests/s here (fewer --gen-tokens cost less); a rate "
        "of inf sends all requests at once",
        status=ExitStatus.USAGE,
    )


def parse_rates(value: str) -> tuple[float, ...]:
    """`--request-rate 1,2.5,inf` ─► (1.0, 2.5, inf); a usage error otherwise."""
    try:
        rates = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        rates = ()
    if not rates or any(r <= 0 or math.isnan(r) for r in rates):
        raise VkramaError(
            f"--request-rate {value!r} is not a list of positive rates",
            hint="requests per second, e.g. --request-rate 0.5,1,2 (inf: all at once)",
            status=ExitStatus.USAGE,
        )
    over = [r for r in rates if RATE_CEILING < r < math.inf]
    if over:
        raise VkramaError(
            f"--request-rate {over[0]:g} is more than any machine's load generator sends "
            f"(at most {RATE_CEILING:g} requests/s)",
            hint="a rate of inf sends all of a level's requests at once",
            status=ExitStatus.USAGE,
        )
    return tuple(dict.fromkeys(rates))
