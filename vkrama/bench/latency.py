"""Latency arithmetic of a serving benchmark: recorded request traces in, one level's figures out.

Stage: bench (serving), after the load generator. Pure: timestamps in, numbers out; no
HTTP, no clock, no printing, so the math is tested on recorded event streams.

Definitions (per request, times from the moment the request was sent; in an open loop, from
the moment it was due to be sent, so that a generator running late counts as queueing):
- TTFT: arrival of the first chunk that carries output text.
- ITL (inter-token latency): each gap between consecutive output chunks. llama-server sends
  one chunk per token, except where it holds back the bytes of an incomplete UTF-8
  character; the gap then covers two tokens, which the tail percentiles show honestly.
- E2E: arrival of the end of the stream.
- decode tok/s: (output tokens - 1) / (last chunk - first chunk), the rate after the first
  token; the same quantity as llama-server's own `predicted_per_second`.
- prompt tok/s: prompt tokens / TTFT (queueing and HTTP included: what a client sees).
- cache hit: llama-server's `timings.cache_n` > 0, the prompt tokens it reused from a
  slot's KV cache instead of computing them (`timings.prompt_n` are the ones it computed).
Level totals: output tok/s = all output tokens / wall time of the level; requests/s =
answered requests / wall time.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vkrama.bench.arrivals import fell_behind
from vkrama.results.levels import LevelStats, Spread, percentile


@dataclass(frozen=True)
class RequestTrace:
    """One request as the client saw it; times in seconds since the request was sent."""

    chunks: tuple[float, ...] = ()  # arrival of each chunk that carried output text
    end: float | None = None  # end of the stream; None when the request failed
    output_tokens: int = 0  # the server's usage.completion_tokens
    prompt_tokens: int = 0  # the server's usage.prompt_tokens
    error: str | None = None
    server: Mapping[str, float] = field(default_factory=dict)  # llama-server's `timings`

    @property
    def ok(self) -> bool:
        return self.error is None and self.end is not None and bool(self.chunks)

    @property
    def ttft(self) -> float:
        return self.chunks[0]

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.chunks)]

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens the server took from its cache (`timings.cache_n`), not computed."""
        return int(self.server.get("cache_n", 0))

    @property
    def decode_tps(self) -> float | None:
        span = self.chunks[-1] - self.chunks[0]
        return (self.output_tokens - 1) / span if self.output_tokens > 1 and span > 0 else None


def summarize(
    traces: Sequence[RequestTrace],
    concurrency: int,
    wall_s: float,
    client_cpu_s: float | None = None,
    server_cpu_s: float | None = None,
    *,
    rate: float | None = None,
    arrival: str | None = None,
    lags: Sequence[float] = (),
    realized_rate: float | None = None,
    prompt_cache: bool | None = None,
) -> LevelStats:
    """One level's figures from its traces; failed requests count only as failures.
    An open-loop level names its `rate` and `arrival`, how late each request left and the
    rate they really left at."""
    done = [t for t in traces if t.ok]
    ms = 1000.0
    lag = Spread.of([lag * ms for lag in lags])
    late = rate is not None and fell_behind(rate, realized_rate, lag.p99 if lag else None)
    output_tokens = sum(t.output_tokens for t in done)
    return LevelStats(
        concurrency=concurrency,
        requests=len(traces),
        failures=len(traces) - len(done),
        wall_s=wall_s,
        ttft_ms=Spread.of([t.ttft * ms for t in done]),
        itl_ms=Spread.of([g * ms for t in done for g in t.gaps]),
        e2e_ms=Spread.of([(t.end or 0.0) * ms for t in done]),
        decode_tps=Spread.of([r for t in done if (r := t.decode_tps) is not None]),
        prompt_tps=Spread.of([t.prompt_tokens / t.ttft for t in done if t.ttft > 0]),
        output_tps=output_tokens / wall_s if wall_s > 0 else 0.0,
        requests_per_s=len(done) / wall_s if wall_s > 0 else 0.0,
        output_tokens=output_tokens,
        prompt_tokens=sum(t.prompt_tokens for t in done),
        server_prompt_tps=Spread.of(_server(done, "prompt_per_second")),
        server_decode_tps=Spread.of(_server(done, "predicted_per_second")),
        prompt_vs_server=_median_ratio(
            [
                (
                    t.prompt_tokens / t.ttft if t.ttft > 0 else None,
                    t.server.get("prompt_per_second"),
                )
                for t in done
            ]
        ),
        decode_vs_server=_median_ratio(
            [(t.decode_tps, t.server.get("predicted_per_second")) for t in done]
        ),
        client_cpu_s=client_cpu_s,
        server_cpu_s=server_cpu_s,
        errors=tuple(dict.fromkeys(t.error for t in traces if t.error))[:5],
        rate=rate,
        arrival=arrival,
        send_lag_ms=lag,
        realized_rate=realized_rate,
        sent_late=late,
        prompt_cache=prompt_cache,
        cache_hits=sum(1 for t in done if t.cached_tokens),
        cached_tokens=sum(t.cached_tokens for t in done),
        ttft_hit_ms=Spread.of([t.ttft * ms for t in done if t.cached_tokens]),
        ttft_miss_ms=Spread.of([t.ttft * ms for t in done if not t.cached_tokens]),
    )


def _median_ratio(pairs: Sequence[tuple[float | None, float | None]]) -> float | None:
    ratios = [ours / theirs for ours, theirs in pairs if ours and theirs]
    return percentile(ratios, 50) if ratios else None


def _server(traces: Sequence[RequestTrace], key: str) -> list[float]:
    return [float(t.server[key]) for t in traces if t.server.get(key)]


def brief(stats: LevelStats) -> str:
    """One progress line: answered requests, TTFT and ITL medians, total throughput."""
    text = f"{stats.requests - stats.failures}/{stats.requests} answered"
    if stats.realized_rate is not None:
        text += f", sent at {stats.realized_rate:.3g}/s"
    if stats.send_lag_ms is not None and stats.send_lag_ms.p99 >= 1:
        text += f" (up to {stats.send_lag_ms.p99:.0f} ms late, p99)"
    if stats.sent_late:
        text += " [generator fell behind]"
    if stats.ttft_ms is not None and stats.itl_ms is not None:
        text += f", TTFT p50 {stats.ttft_ms.p50:.0f} ms, ITL p50 {stats.itl_ms.p50:.1f} ms"
    text += f", {stats.output_tps:.1f} tok/s total"
    if stats.client_cpu_s is not None and stats.server_cpu_s:
        text += f", client CPU {stats.client_cpu_s:.2f} s vs server {stats.server_cpu_s:.2f} s"
    return text
