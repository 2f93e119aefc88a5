"""The serving bench against a stub server of known capacity (tests/serve_stub.py) on
loopback: real HTTP, real server-sent events, real threads and asyncio, and expectations
that come from the stub's fixed timing, not from the code under test or the host's speed.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from serve_stub import ALIAS, Stub, serving

from vkrama import config, results
from vkrama.bench import load
from vkrama.bench.arrivals import Pace
from vkrama.errors import ExitStatus


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


def _bench(vkrama: Callable[..., Any], stub: Stub, *flags: str) -> Any:
    return vkrama("bench", "--serve", "--url", stub.url, *flags, "--json", timeout=600)


def test_bench_url_measures_a_running_server_and_names_it(
    vkrama: Callable[..., Any], stub: Stub
) -> None:
    done = _bench(vkrama, stub, "--concurrency", "1,2", "--requests", "4", "--gen-tokens", "8",
                  "--prompt-tokens", "32")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["backend"], r["concurrency"], r["requests"], r["failures"]) for r in rows] == [
        ("url", 1, 4, 0), ("url", 2, 4, 0)
    ]  # fmt: skip
    # The row names the URL and what the server said about itself (/v1/models, /props).
    assert rows[0]["device"] == f"{stub.url} ({ALIAS}, build stub-1, slots 4)"
    (cell,) = results.get_run(config.load(), "latest").cells
    assert cell.provenance["prompt_tokens_counted_by"] == "/tokenize"
    # Cut with the server's /tokenize to 32 tokens as the stub counts them (a word each,
    # one per message and BOS): every request's usage says 32.
    assert [s.prompt_tokens for s in cell.serving] == [4 * 32, 4 * 32]
    assert stub.most_at_once == 2 and len(stub.arrivals) == 4 + 4 + 1 + 2  # + warm-ups


def test_bench_url_without_tokenize_records_the_servers_own_prompt_counts(
    vkrama: Callable[..., Any],
) -> None:
    with serving(Stub(slots=2, prefill_s=0.02, token_s=0.005, tokenize=False, props=False)) as bare:
        done = _bench(vkrama, bare, "--concurrency", "1", "--requests", "3", "--gen-tokens",
                      "4", "--prompt-tokens", "20")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the server has no /tokenize: prompt lengths are its own counts" in done.stderr
    (row,) = json.loads(done.stdout)
    assert row["device"] == f"{bare.url} ({ALIAS})"
    (cell,) = results.get_run(config.load(), "latest").cells
    assert cell.provenance["prompt_tokens_counted_by"] == "the server's usage.prompt_tokens"
    # 20 words of user text: the stub counts them, its template's one word and BOS.
    assert cell.serving[0].prompt_tokens == 3 * 22


def test_the_sweep_finds_the_stubs_capacity(vkrama: Callable[..., Any]) -> None:
    # Two slots, 0.1 s to the first token and 0.02 s a token after: a request of 16 tokens
    # holds a slot 0.4 s, so the stub completes at most 5 requests/s. Evenly spaced
    # arrivals queue only past that rate; TTFT then climbs above the 0.3 s target within a
    # level of 16 requests (at 5.66/s the 15th waits ~0.2 s more).
    with serving(Stub(slots=2, prefill_s=0.1, token_s=0.02)) as stub:
        assert stub.capacity(16) == pytest.approx(5.0)
        done = _bench(vkrama, stub, "--sweep", "--slo", "ttft_p90=300ms", "--request-rate",
                      "2", "--arrival", "constant", "--requests", "16",
                      "--gen-tokens", "16")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    capacity = rows[0]["capacity"]
    assert capacity == pytest.approx(5.0, rel=0.25), done.stderr
    assert not rows[0]["capacity_at_least"]
    for row in rows:
        # Every level offered its label's rate, and its goodput is what met the SLO.
        assert row["realized_rate"] == pytest.approx(row["rate"], rel=0.10), row
        if row["slo_met"]:
            assert row["good_requests"] >= 0.9 * row["requests"]
        assert row["goodput"] <= row["realized_rate"] * 16 / 15 * 1.01
    assert any(not row["slo_met"] for row in rows)


@pytest.mark.parametrize("arrival", ["poisson", "constant"])
def test_levels_at_a_rate_offer_it_through_the_cli(
    vkrama: Callable[..., Any], stub: Stub, arrival: str
) -> None:
    done = _bench(vkrama, stub, "--request-rate", "3,12", "--arrival", arrival, "--gen-tokens",
                  "4", "--duration", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    # --duration 3 s: rate x 3 requests, offered at the rate (the 10 % for 8 or more).
    assert [(r["rate"], r["requests"]) for r in rows] == [(3.0, 9), (12.0, 36)]
    for row in rows:
        assert row["realized_rate"] == pytest.approx(row["rate"], rel=0.10), row
        assert row["send_lag_ms"]["p99"] >= 0 and "sent_late" in row


def test_a_rate_the_generator_cannot_send_is_one_usage_error_that_stores_nothing(
    vkrama: Callable[..., Any], stub: Stub
) -> None:
    done = _bench(vkrama, stub, "--request-rate", "9000", "--gen-tokens", "4")
    assert done.returncode == ExitStatus.USAGE, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith(("Error:", "Hint:"))]
    assert len(said) == 2 and said[0].startswith("Error: the load generator cannot send 9000")
    assert said[1].startswith("Hint: at most ") and done.stdout == ""
    assert results.list_runs(config.load()) == []


def test_a_sweep_with_a_shared_prefix_measures_the_prompt_cache_on(
    vkrama: Callable[..., Any], stub: Stub
) -> None:
    # The given rate runs with llama-server's prompt cache off, then on; the sweep's own
    # levels as the server would serve, cache on, and capacity is judged on those.
    done = _bench(vkrama, stub, "--prefix-tokens", "16", "--prompt-tokens", "64", "--sweep",
                  "--slo", "e2e_p99=60s", "--request-rate", "8", "--requests", "8",
                  "--gen-tokens", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["prompt_cache"] for r in rows[:2]] == [False, True] and len(rows) > 2
    assert all(r["prompt_cache"] is True for r in rows[2:]), [r["load"] for r in rows]
    # The stub saw it: the cache-off level's 8 requests (and its warm-up) asked for none.
    assert stub.cached.count(True) >= sum(r["requests"] for r in rows[1:])
    assert stub.cached.count(False) <= 8 + stub.slots
    # Nothing broke that generous target: the capacity is a lower bound.
    assert rows[0]["capacity"] == max(r["rate"] for r in rows) and rows[0]["capacity_at_least"]
