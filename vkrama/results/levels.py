"""A serving bench's records: each concurrency level's figures, as stored and read back.

Stage: results. Written by `bench.latency.summarize`, read by the store, ranking and
`serve_report`; they live here so that results never imports bench. Pure data.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from vkrama.results.energy import Energy

QUANTILES = (50, 90, 99)


@dataclass(frozen=True)
class Spread:
    """p50/p90/p99 and the mean of one figure."""

    p50: float
    p90: float
    p99: float
    mean: float
    stdev: float = 0.0  # sample standard deviation (0 for one value)

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        p50, p90, p99 = (percentile(values, q) for q in QUANTILES)
        stdev = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(p50, p90, p99, math.fsum(values) / len(values), stdev)


@dataclass(frozen=True)
class LevelStats:
    """Everything measured at one level of load of one cell: a closed loop of
    `concurrency` clients, or an open loop at `rate` requests/s (`concurrency` 0)."""

    concurrency: int
    requests: int  # sent
    failures: int
    wall_s: float
    ttft_ms: Spread | None
    itl_ms: Spread | None
    e2e_ms: Spread | None
    decode_tps: Spread | None  # per request
    prompt_tps: Spread | None  # per request, client side (prompt tokens / TTFT)
    output_tps: float  # all answered requests together
    requests_per_s: float
    output_tokens: int
    prompt_tokens: int
    # llama-server's own per-request figures, for the cross-check against the client's.
    server_prompt_tps: Spread | None = None
    server_decode_tps: Spread | None = None
    # Median over requests of the client's figure / the server's own for the same request
    # (1.0: they agree). Prompt: prompt tokens / TTFT against `prompt_per_second`, which
    # only agree when requests do not queue for a slot or share a prompt batch.
    prompt_vs_server: float | None = None
    decode_vs_server: float | None = None
    client_cpu_s: float | None = None  # the load generator's own CPU time during the level
    server_cpu_s: float | None = None  # the server container's CPU time during the level
    errors: tuple[str, ...] = ()  # distinct failure reasons, a few
    # Open loop (`--request-rate`): the rate asked for (None for a burst) and the pattern
    # (poisson, constant, burst); how late the generator sent each request against its
    # schedule. Closed-loop levels have neither (arrival None).
    rate: float | None = None
    arrival: str | None = None
    send_lag_ms: Spread | None = None
    # Requests/s the generator really sent, (N-1) over its first to last send, beside the
    # nominal `rate`; and whether it fell behind beyond `bench.arrivals`' stated bounds
    # (its latencies count from the scheduled sends, so the lateness is in them).
    realized_rate: float | None = None
    sent_late: bool = False
    # Against `--slo`: met (None when no SLO was set) and, if not, what broke; the level's
    # goodput as vLLM and GenAI-Perf define it: requests completed within every target,
    # each judged on its own figures, per second of the level (`good_requests` of them).
    slo_met: bool | None = None
    slo_broken: tuple[str, ...] = ()
    goodput: float | None = None
    good_requests: int | None = None
    # `--prefix-tokens`: whether requests let the server reuse a cached prompt prefix
    # (None: no shared prefix measured), and llama-server's own accounting of it: requests
    # whose `timings.cache_n` was above 0, prompt tokens taken from the cache, and TTFT of
    # the requests with and without such a hit.
    prompt_cache: bool | None = None
    cache_hits: int = 0
    cached_tokens: int = 0
    ttft_hit_ms: Spread | None = None
    ttft_miss_ms: Spread | None = None
    # What the level drew (bench.energy): W, idle W and J per output token, or why none;
    # None where nothing was measured (older runs).
    energy: Energy | None = None

    @property
    def joules_per_request(self) -> float | None:
        """The energy above idle per answered request, from J/token and the tokens made."""
        answered = self.requests - self.failures
        joules = self.energy.joules_per_token if self.energy is not None else None
        if joules is None or answered <= 0:
            return None
        return joules * self.output_tokens / answered

    @property
    def load(self) -> str:
        """The level as a reader names it: "4 clients", "2/s poisson", "burst"."""
        if self.arrival is None:
            said = f"{self.concurrency} client{'s' if self.concurrency != 1 else ''}"
        else:
            said = "burst" if self.rate is None else f"{self.rate:g}/s {self.arrival}"
        if self.prompt_cache is not None:
            said += f", cache {'on' if self.prompt_cache else 'off'}"
        return said

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LevelStats:
        values = dict(data)
        for name in ("ttft_ms", "itl_ms", "e2e_ms", "decode_tps", "prompt_tps",
                     "server_prompt_tps", "server_decode_tps", "send_lag_ms", "ttft_hit_ms",
                     "ttft_miss_ms"):  # fmt: skip
            values[name] = Spread(**values[name]) if values.get(name) else None
        values["errors"] = tuple(values.get("errors") or ())
        values["slo_broken"] = tuple(values.get("slo_broken") or ())
        values["energy"] = Energy.from_dict(values["energy"]) if values.get("energy") else None
        return cls(**values)


@dataclass(frozen=True)
class Capacity:
    """A stack's capacity within an SLO: the highest request rate offered whose level met
    it, below every rate that broke it (a rate that held above one that broke was luck).
    `at_least` when no rate tried broke it: the sweep ended at the load generator's limit
    or its last level, not at the SLO, so the stack may sustain more."""

    rate: float
    at_least: bool

    def said(self) -> str:
        return f"{'at least ' if self.at_least else ''}{self.rate:.3g} requests/s"


def capacity(judged: Iterable[tuple[float, bool]]) -> Capacity | None:
    """The capacity from (rate, met the SLO?) pairs; None when no rate met it."""
    judged = list(judged)
    broke = min((rate for rate, met in judged if not met), default=math.inf)
    best = max((rate for rate, met in judged if met and rate < broke), default=None)
    return None if best is None else Capacity(best, at_least=math.isinf(broke))


def judged(levels: Iterable[LevelStats]) -> list[tuple[float, bool]]:
    """(rate, met the SLO?) of the open-loop levels that were judged against one. With a
    shared prefix, the levels with the prompt cache on: what a server with its cache
    serves (the cache-off levels are their comparison)."""
    return [
        (s.rate, s.slo_met)
        for s in levels
        if s.rate is not None and s.slo_met is not None and s.prompt_cache is not False
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's
    default), so p50 of an even count is the mean of the middle two."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
