"""Goodput, capacity and prompt-cache hits in the records: each level judged against the
SLO, the table's goodput and SLO columns and capacity lines, `serve --backend best --rank-by
goodput` picking the stack of the higher capacity and saying so, and cache hits counted from
llama-server's timings."""

from __future__ import annotations

from dataclasses import replace

import pytest
from bench_fakes import CPU, LAVAPIPE, SHA, info

from vkrama import config, results
from vkrama.bench.latency import RequestTrace, summarize
from vkrama.bench.serving import ServeParams
from vkrama.bench.slo import parse
from vkrama.results import serve_report
from vkrama.results.levels import LevelStats, Spread
from vkrama.results.records import CellResult, CellStatus, RunStatus


def _rate_level(rate: float, met: bool) -> LevelStats:
    spread = Spread(100.0, 200.0, 300.0, 120.0, 10.0)
    level = LevelStats(0, 8, 0, 4.0, spread, spread, spread, spread, spread, 30.0, 2.0, 64,
                       1024, rate=rate, arrival="poisson")  # fmt: skip
    good = 8 if met else 3  # of 8 requests in 4 s: goodput 2/s or 0.75/s
    return replace(level, slo_met=met, slo_broken=() if met else ("ttft p90 900 ms > 500 ms",),
                   goodput=good / 4.0, good_requests=good)  # fmt: skip


def _swept(choice: object, breaks_at: float, rates: tuple[float, ...] = (1, 2, 4, 8)) -> CellResult:
    return CellResult(
        backend=choice.backend,  # type: ignore[attr-defined]
        driver=choice.driver,  # type: ignore[attr-defined]
        device="CPU",
        status=CellStatus.OK,
        image_id="sha256:x",
        serving=tuple(_rate_level(r, r < breaks_at) for r in rates),
    )


def _run(settings: config.Settings, *cells: CellResult) -> int:
    params = ServeParams((), rates=(1.0,), slo=parse("ttft_p90=500ms"), sweep=True).as_dict()
    assert params["slo"] == "ttft_p90=500ms" and params["sweep"] is True
    run_id = results.start_run(settings, info(params=params))
    for n, cell in enumerate(cells):
        results.add_cell(settings, run_id, n, cell)
    results.finish_run(settings, run_id, RunStatus.OK)
    return run_id


def test_the_table_says_each_levels_goodput_and_each_stacks_capacity(
    settings: config.Settings,
) -> None:
    detail = results.get_run(settings, _run(settings, _swept(CPU, 3.0), _swept(LAVAPIPE, 9.0)))
    rows = serve_report.serve_rows(detail.run.id, detail.cells)
    assert [(r.load, r.slo_met, r.goodput) for r in rows[:4]] == [
        ("1/s poisson", True, 2.0), ("2/s poisson", True, 2.0), ("4/s poisson", False, 0.75),
        ("8/s poisson", False, 0.75),
    ]  # fmt: skip
    # Every row of a cell carries its capacity, for a script reading --json; lavapipe met
    # every rate tried, so 8/s is only a lower bound.
    assert [(r.capacity, r.capacity_at_least) for r in rows] == [(2.0, False)] * 4 + [
        (8.0, True)
    ] * 4
    table = serve_report.serve_table(rows)
    assert "broke: ttft p90 900 ms > 500 ms" in table and "0.75 (3/8)" in table
    assert "capacity within the SLO (highest rate that met it), cpu: 2 requests/s\n" in table
    assert (
        "capacity within the SLO (highest rate that met it), vulkan/lavapipe: at least 8 "
        "requests/s (no rate tried broke the SLO: the server may sustain more)"
    ) in table


def test_backend_best_ranks_by_capacity_and_says_so(settings: config.Settings) -> None:
    _run(settings, _swept(CPU, 3.0), _swept(LAVAPIPE, 9.0, rates=(1, 2, 4, 8, 16)))
    for metric in ("goodput", "capacity"):
        best = results.best(settings, SHA, "none", metric)
        assert best is not None and (best.backend, best.driver) == ("vulkan", "lavapipe")
        assert best.reason.startswith("highest capacity at depth 0 (the highest request rate ")
        assert "vulkan/lavapipe on CPU at 8 requests/s within the SLO (bench run" in best.reason
        assert "vs cpu at 2 requests/s within the SLO (run" in best.reason
    # Open-loop levels are not ranked as serve:tps@0.
    assert results.best(settings, SHA, "none", "serve:tps@0") is None


def _cached(ttft: float, cache_n: int) -> RequestTrace:
    # llama-server's timings: cache_n prompt tokens reused, prompt_n computed.
    server = {"cache_n": float(cache_n), "prompt_n": float(500 - cache_n)}
    return RequestTrace((ttft, ttft + 0.1), ttft + 0.2, 2, 500, server=server)


def test_cache_hits_are_counted_from_the_servers_own_timings() -> None:
    traces = [_cached(0.05, 448), _cached(0.06, 440), _cached(0.4, 0), RequestTrace(error="x")]
    stats = summarize(traces, 2, 1.0, prompt_cache=True)
    assert (stats.cache_hits, stats.cached_tokens, stats.prompt_tokens) == (2, 888, 1500)
    assert stats.ttft_hit_ms is not None and stats.ttft_hit_ms.p50 == pytest.approx(55)
    assert stats.ttft_miss_ms is not None and stats.ttft_miss_ms.p50 == pytest.approx(400)
    assert stats.load == "2 clients, cache on"
    off = summarize([_cached(0.3, 0)], 2, 1.0, prompt_cache=False)
    assert (off.cache_hits, off.cached_tokens, off.ttft_hit_ms) == (0, 0, None)

    lines = serve_report.cache_lines(
        serve_report.serve_rows(None, [
            CellResult(backend="cpu", driver=None, device="CPU", status=CellStatus.OK,
                       serving=(off, stats)),
        ])
    )  # fmt: skip
    assert lines == [
        "prompt cache, cpu at 2 clients, cache on: 2 of 3 requests hit it, 888 of 1500 prompt "
        "tokens came from it; TTFT p50 55 ms on a hit, 400 ms on a miss, 300 ms with the "
        "cache off"
    ]
