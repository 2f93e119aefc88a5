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


def schedule(
    pace: Pace, requests: int | None, duration: float | None = None, seed: int = ARRIVAL_SEED
) -> list[float]:
    """Send times in seconds from the level's start, in order: `requests` of them, or as
    many as fall within `duration` seconds.

    Poisson: gaps drawn from an exponential distribution of mean 1/rate (seeded: every stack
    gets the same arrivals). Constant: one every 1/rate s. Burst: every request at 0.
    """
    if pace.rate <= 0 or math.isnan(pace.rate):
        raise ValueError(f"rate must be positive, not {pace.rate}")
    if pace.arrival not in ARRIVALS:
        raise ValueError(f"arrival must be one of {ARRIVALS}, not {pace.arrival!r}")
    if requests is None and (duration is None or math.isinf(pace.rate)):
        raise ValueError("a level needs a request count (or, at a finite rate, a duration)")
    if math.isinf(pace.rate):
        return [0.0] * (requests or 0)
    rng = random.Random(seed)
    times: list[float] = []
    now = 0.0
    while requests is None or len(times) < requests:
        gap = rng.expovariate(pace.rate) if pace.arrival == "poisson" else 1 / pace.rate
        # The first request goes at once; the pattern shapes the gaps after it.
        now = now + gap if times else 0.0
        if duration is not None and now >= duration:
            break
        times.append(now)
    return times


async def dispatch(
    times: Sequence[float],
    send: Callable[[], Awaitable[None]],
    now: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> list[float]:
    """Start `send()` at each of `times` (seconds after the first call of `now`), without
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
        running.append(asyncio.ensure_future(send()))
    await asyncio.gather(*running)
    return lags


# The load generator runs on one core (one event loop); past this share of it, its own
# queueing would delay the requests it is meant to send on time.
GENERATOR_SHARE = 0.5


def can_send(rate: float, cost_s: float) -> bool:
    """Whether the generator keeps `rate` when each request costs it `cost_s` CPU seconds."""
    return math.isinf(rate) or cost_s <= 0 or rate * cost_s <= GENERATOR_SHARE


def check_rate(rate: float, cost_s: float) -> None:
    """Refuse a rate this machine cannot generate: each request costs the generator `cost_s`
    CPU seconds (measured on the warm-up round), so `rate` needs rate x cost of its core."""
    if can_send(rate, cost_s):
        return
    most = GENERATOR_SHARE / cost_s
    raise VkramaError(
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
    return tuple(dict.fromkeys(rates))
