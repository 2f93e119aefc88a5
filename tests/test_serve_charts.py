"""`results chart` and `results report` of serving runs (no podman): TTFT p90 and total
throughput against load, a curve per stack, clients and request rate on their own axes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_fakes import drawn, store_run

from vkrama import config
from vkrama.bench.serving import ServeParams
from vkrama.results import serve_chart
from vkrama.results.levels import LevelStats, Spread
from vkrama.results.records import CellResult, CellStatus


def _level(load: float, ttft_p90: float, tps: float, rate: bool = False) -> LevelStats:
    spread = Spread(ttft_p90 / 2, ttft_p90, ttft_p90 * 2, ttft_p90 / 2)
    level = LevelStats(0 if rate else int(load), 8, 0, 4.0, spread, spread, spread, None, None,
                       tps, 2.0, 64, 1024)  # fmt: skip
    return replace(level, rate=load, arrival="poisson") if rate else level


def _stack(backend: str, driver: str | None, slow: float) -> CellResult:
    levels = [_level(c, 100 * c * slow, 40 * c / slow) for c in (1, 4)]
    levels += [_level(r, 150 * r * slow, 30 * r / slow, rate=True) for r in (0.5, 1.0, 2.0)]
    cached = replace(levels[0], prompt_cache=True)  # measures the cache: not drawn
    return CellResult(backend=backend, driver=driver, device="x", status=CellStatus.OK,
                      serving=(*levels, cached))  # fmt: skip


def _run() -> int:
    params = ServeParams((1, 4), rates=(0.5, 1.0, 2.0)).as_dict()
    return store_run(config.load(), _stack("cpu", None, 2.0), _stack("vulkan", "lavapipe", 1.0),
                     params=params)  # fmt: skip


def test_each_stack_is_a_curve_of_its_levels_on_the_load_axis_they_used() -> None:
    from vkrama import results

    found = serve_chart.load_points([results.get_run(config.load(), str(_run()))])
    cpu = [(p.axis, p.load, p.ttft_p90_ms, p.output_tps) for p in found if p.cell == "cpu"]
    assert cpu == [
        ("clients", 1.0, 200.0, 20.0), ("clients", 4.0, 800.0, 80.0),
        ("rate", 0.5, 150.0, 7.5), ("rate", 1.0, 300.0, 15.0), ("rate", 2.0, 600.0, 30.0),
    ]  # fmt: skip


def test_the_chart_draws_ttft_and_throughput_against_load_per_stack(
    vkrama: Callable[..., Any], tmp_path: Path
) -> None:
    _run()
    text = drawn(vkrama, "chart", tmp_path / "load.svg", "latest")
    for shown in ("ttft", "tps"):
        for axis in ("clients", "rate"):
            for stack in ("cpu", "vulkan/lavapipe"):
                assert text.count(f'<g id="load {shown} {axis} {stack}"') == 1, (shown, axis)
    assert "TTFT p90 (ms) against load" in text and "requests/s sent (open loop)" in text

    page = drawn(vkrama, "report", tmp_path / "report.html", "latest")
    assert "data-test='load'" in page and 'id="load ttft rate vulkan/lavapipe"' in page
