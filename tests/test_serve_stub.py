"""The serving bench against a stub server of known capacity (tests/serve_stub.py) on
loopback: real HTTP, real server-sent events, real threads and asyncio, and expectations
that come from the stub's fixed timing, not from the code under test or the host's speed.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from serve_stub import ALIAS, Stub, serving

from vkrama.bench import load
from vkrama.bench.arrivals import Pace


@pytest.fixture
def stub() -> Iterator[Stub]:
    with serving(Stub(slots=4, prefill_s=0.02, token_s=0.005)) as running:
        yield running


def _body(target: load.Target, tokens: int = 4) -> dict[str, Any]:
    return load.request_body(target, "one two three", tokens)


@pytest.mark.parametrize(("rate", "requests"), [(2.0, 8), (8.0, 16), (5.0, 24)])
def test_a_level_sends_at_its_nominal_rate_as_the_server_sees_it(
    stub: Stub, rate: float, requests: int
) -> None:
    target = load.Target(stub.url, ALIAS)
    level = load.Level(0, Pace(rate), requests)
    with load.EventLoop() as loop:
        sent = load.run_level(loop, target, lambda: _body(target), level)
    assert len(sent.traces) == requests and all(t.ok for t in sent.traces)
    # The bar: within 10 % for levels of 8 requests or more, as the generator
    # measured it and as the server's own clock saw the requests arrive.
    assert sent.realized_rate == pytest.approx(rate, rel=0.10)
    seen = stub.arrivals
    assert len(seen) == requests
    assert (requests - 1) / (max(seen) - min(seen)) == pytest.approx(rate, rel=0.10)


def test_latencies_count_from_the_scheduled_send_when_the_generator_runs_late(
    stub: Stub,
) -> None:
    target = load.Target(stub.url, ALIAS)
    made = itertools.count()

    def bodies() -> dict[str, Any]:
        # The third request's body takes the generator's loop for 0.3 s (as a loaded
        # generator would): the sends due meanwhile leave late.
        if next(made) == 2:
            time.sleep(0.3)
        return _body(target)

    level = load.Level(0, Pace(20.0, "constant"), 8)  # one due every 50 ms
    with load.EventLoop() as loop:
        sent = load.run_level(loop, target, bodies, level)
    assert max(sent.lags) >= 0.2 and all(t.ok for t in sent.traces)
    # Each TTFT holds its request's lateness and the stub's prefill (traces are in the
    # order they ended; the lags in the order sent: compare the sets' extremes).
    ttfts = sorted(t.ttft for t in sent.traces)
    assert ttfts[-1] >= max(sent.lags) + stub.prefill_s
    assert ttfts[0] >= stub.prefill_s
