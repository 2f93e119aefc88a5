"""The serving bench's arithmetic: percentiles, TTFT/ITL from recorded event streams, the
level summary, its storage (old results files stay readable), ranking and tables."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy
import pytest
from bench_fakes import CPU, LAVAPIPE, SHA, info

from vkrama import config, results
from vkrama.bench.latency import RequestTrace, summarize
from vkrama.bench.load import StreamRecorder
from vkrama.bench.plan import Slot
from vkrama.bench.serving import ServeParams, plan_serve_cell
from vkrama.cli.console import to_json
from vkrama.results import db, report, serve_report
from vkrama.results.levels import LevelStats, Spread, percentile
from vkrama.results.records import CellResult, CellStatus, RunStatus

RECORDED = Path(__file__).parent / "data" / "chat_stream_llama_server_b11669.json"


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 99, 5.0),
        ([1.0, 2.0], 50, 1.5),
        ([1.0, 2.0, 3.0, 4.0], 90, 3.7),
        ([10.0, 1.0, 7.0, 3.0, 5.0], 50, 5.0),
        ([float(v) for v in range(1, 101)], 99, 99.01),
    ],
    ids=["one-value-is-every-percentile", "even-count-median-is-the-middle-mean",
         "p90-interpolates-between-ranks", "unsorted-input", "p99-of-1-to-100"],
)  # fmt: skip
def test_percentile_interpolates_linearly(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_matches_numpy_on_uneven_data() -> None:
    values = [0.3, 12.0, 4.5, 4.5, 7.25, 100.0, 0.01, 33.0, 8.0]
    for q in (50, 90, 99):
        assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


def _replay(path: Path) -> RequestTrace:
    events = json.loads(path.read_text())
    recorder = StreamRecorder()
    for event in events:
        if not recorder.feed(event["line"], event["t"]):
            break
    return recorder.trace(events[-1]["t"])


def test_a_recorded_llama_server_stream_gives_ttft_gaps_tokens_and_its_timings() -> None:
    trace = _replay(RECORDED)
    assert trace.ok
    # The role-only first chunk carries no text: the first token came with "rv" at 3.697175.
    assert trace.ttft == pytest.approx(3.697175)
    assert len(trace.chunks) == 8 and trace.output_tokens == 8 and trace.prompt_tokens == 40
    assert trace.gaps[0] == pytest.approx(6.228617 - 3.697175)
    assert trace.end == pytest.approx(9.460764)
    assert trace.decode_tps == pytest.approx(7 / (9.450653 - 3.697175))
    assert trace.server["prompt_n"] == 40 and trace.server["predicted_n"] == 8
    # The client's decode rate and llama-server's own agree on this recorded request.
    assert trace.decode_tps is not None
    assert trace.decode_tps / trace.server["predicted_per_second"] == pytest.approx(1, abs=0.1)


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (['data: {"choices":[{"delta":{"content":"a"}}]}', ""], "without [DONE]"),
        (['data: {"error":{"message":"slot unavailable"}}', ""], "slot unavailable"),
        (
            ['data: {"choices":[{"delta":{"role":"assistant"}}]}', "", "data: [DONE]", ""],
            "no output",
        ),
        (["data: {not json", ""], "not JSON"),
        # An event the stream ends before its blank line is no event (WHATWG EventSource).
        (["data: [DONE]"], "without [DONE]"),
    ],
    ids=["cut-off-stream", "error-event", "no-text-at-all", "garbage", "unfinished-event"],
)
def test_broken_streams_are_failures_with_a_reason(lines: list[str], error: str) -> None:
    recorder = StreamRecorder()
    for n, line in enumerate(lines):
        if not recorder.feed(line, 0.1 * (n + 1)):
            break
    trace = recorder.trace(1.0)
    assert not trace.ok and error in (trace.error or "")


def _trace(chunks: tuple[float, ...], end: float, **server: float) -> RequestTrace:
    return RequestTrace(chunks, end, len(chunks), 100, server=server)


def test_a_level_summary_counts_only_answered_requests_and_pools_every_gap() -> None:
    traces = [
        _trace((0.1, 0.2, 0.3, 0.4), 0.5, predicted_per_second=10.0, prompt_per_second=1000.0),
        _trace((0.2, 0.4, 0.6, 0.8), 0.9, predicted_per_second=5.0, prompt_per_second=500.0),
        RequestTrace(error="HTTP 503: busy"),
    ]
    stats = summarize(traces, concurrency=2, wall_s=2.0, client_cpu_s=0.01, server_cpu_s=1.0)
    assert (stats.requests, stats.failures, stats.errors) == (3, 1, ("HTTP 503: busy",))
    assert stats.ttft_ms is not None and stats.ttft_ms.p50 == pytest.approx(150)
    # Gaps of both requests together: 100 ms three times, 200 ms three times.
    assert stats.itl_ms is not None and stats.itl_ms.p50 == pytest.approx(150)
    assert stats.itl_ms.p90 == pytest.approx(200) and stats.itl_ms.mean == pytest.approx(150)
    assert stats.e2e_ms is not None and stats.e2e_ms.p99 == pytest.approx(896)  # 500 + 0.99 x 400
    assert stats.decode_tps is not None and stats.decode_tps.p50 == pytest.approx(7.5)
    assert stats.output_tps == pytest.approx(8 / 2.0) and stats.requests_per_s == 1.0
    assert stats.prompt_tokens == 200 and stats.output_tokens == 8
    # Client and server agree exactly on decode (3 tokens / 0.3 s = 10 t/s; 3 / 0.6 = 5).
    assert stats.decode_vs_server == pytest.approx(1.0)
    # Client prompt rates are 100/0.1 and 100/0.2: the server's were 1000 and 500.
    assert stats.prompt_vs_server == pytest.approx(1.0)


def test_a_level_where_everything_failed_has_no_latencies() -> None:
    stats = summarize([RequestTrace(error="refused")] * 3, concurrency=1, wall_s=1.0)
    assert stats.failures == 3 and stats.ttft_ms is None and stats.output_tps == 0.0


def test_level_sizes_default_to_four_requests_per_client_and_at_least_sixteen() -> None:
    # At least 16: a p90 of 8 leant on the slowest request (issue 31).
    assert [lv.requests for lv in ServeParams((1, 4, 8, 32)).levels()] == [16, 16, 32, 128]
    assert [lv.requests for lv in ServeParams((1, 8), requests=5).levels()] == [5, 5]
    # Open loop: four seconds' worth at the rate (at least 16); a burst, 4 per slot.
    rated = ServeParams((), rates=(0.5, 10.0, math.inf), parallel=8).levels()
    assert [lv.requests for lv in rated] == [16, 40, 32]
    assert [lv.label() for lv in rated] == ["0.5/s poisson", "10/s poisson", "burst"]
    timed = ServeParams((2,), duration=30.0).levels()
    assert [(lv.requests, lv.duration) for lv in timed] == [(None, 30.0)]


def test_a_serve_cell_is_llama_server_as_serve_starts_it_with_slots_for_the_top_level() -> None:
    from vkrama.store import LocalModel

    path = Path("/m/tiny.gguf")
    model = LocalModel("tiny", "file", "", path, (path,), SHA, (SHA,), 1, None)  # type: ignore[arg-type]
    params = ServeParams((1, 8, 32), prompt_tokens=512, gen_tokens=128)
    slot = Slot(LAVAPIPE, "localhost/vkrama/vulkan:latest", "feedbeef", 1)
    planned = plan_serve_cell(slot, model, params, port=18555)
    argv = planned.spec.command
    assert argv[0] == "llama-server"
    assert argv[argv.index("--parallel") + 1] == "32"
    assert argv[argv.index("--ctx-size") + 1] == str(32 * (512 + 128 + 32))
    assert planned.spec.name == "vkrama-serve-feedbeef-1-vulkan-lavapipe"
    assert planned.labels["vkrama.bench-run"] == "feedbeef"
    assert planned.labels["vkrama.role"] == "bench"  # `vkrama stop --all` leaves it alone
    assert planned.spec.read_only_rootfs and planned.spec.cap_drop_all
    assert planned.spec.env["GGML_VK_VISIBLE_DEVICES"] == "0"


def _level(concurrency: int, output_tps: float, failures: int = 0) -> LevelStats:
    spread = Spread(10.0, 12.0, 13.0, 10.0, 1.0)
    return LevelStats(concurrency, 8, failures, 4.0, spread, spread, spread, spread, spread,
                      output_tps, 2.0, 64, 1024, client_cpu_s=0.05, server_cpu_s=5.0)  # fmt: skip


def _serve_cell(choice: object, tps_at_4: float, ok: bool = True) -> CellResult:
    return CellResult(
        backend=choice.backend,  # type: ignore[attr-defined]
        driver=choice.driver,  # type: ignore[attr-defined]
        device="CPU",
        status=CellStatus.OK if ok else CellStatus.FAILED,
        reason="" if ok else "1 of 8 requests failed at concurrency 4: HTTP 503",
        image_id="sha256:x",
        serving=(_level(1, 20.0), _level(4, tps_at_4, failures=0 if ok else 1)),
    )


def _serve_run(settings: config.Settings, *cells: CellResult) -> int:
    params = ServeParams((1, 4), 64, 16).as_dict()
    run_id = results.start_run(settings, info(params=params))
    for n, c in enumerate(cells):
        results.add_cell(settings, run_id, n, c)
    results.finish_run(settings, run_id, RunStatus.OK)
    return run_id


def test_serving_levels_are_stored_and_read_back_whole(settings: config.Settings) -> None:
    stored = _serve_cell(CPU, 40.0)
    run_id = _serve_run(settings, stored)
    assert results.get_run(settings, run_id).cells[0] == stored


def test_a_results_file_from_before_serving_is_migrated_and_keeps_its_runs(
    settings: config.Settings,
) -> None:
    settings.home.mkdir(parents=True)
    conn = sqlite3.connect(db.db_path(settings))
    # A file as the vkrama before serving made it: schema 5, no serve_levels table.
    before = db._SCHEMA + db._MIGRATIONS[4] + db._MIGRATIONS[5]
    conn.executescript(before + "PRAGMA user_version = 5;")
    conn.execute(
        "INSERT INTO runs (started, status, host, kernel, gpus, gpu_key, model_name,"
        " model_sha256, params, vkrama_version) VALUES"
        " ('2026-01-01', 'ok', 'h', 'k', '[]', 'none', 'tiny', ?, '{}', '0.0.9')",
        (SHA,),
    )
    conn.commit()
    conn.close()
    assert [r.info.vkrama_version for r in results.list_runs(settings)] == ["0.0.9"]
    run_id = _serve_run(settings, _serve_cell(CPU, 40.0))
    assert results.get_run(settings, run_id).cells[0].serving[1].output_tps == 40.0
    version = sqlite3.connect(db.db_path(settings)).execute("PRAGMA user_version").fetchone()
    assert version == (db.SCHEMA_VERSION,)


def test_backend_best_can_rank_by_serving_throughput_at_a_concurrency(
    settings: config.Settings,
) -> None:
    _serve_run(settings, _serve_cell(CPU, 40.0), _serve_cell(LAVAPIPE, 55.0))
    best = results.best(settings, SHA, "none", "serve:tps@4")
    assert best is not None and (best.backend, best.driver) == ("vulkan", "lavapipe")
    assert "serve:tps@4" in best.reason and "55.0" in best.reason
    at_1 = results.best(settings, SHA, "none", "serve:tps@1")
    assert at_1 is not None and at_1.tps == 20.0
    assert results.best(settings, SHA, "none", "serve:tps@16") is None
    with pytest.raises(ValueError):
        results.best(settings, SHA, "none", "serve:ttft")


def test_a_cell_with_failed_requests_is_never_ranked(settings: config.Settings) -> None:
    _serve_run(settings, _serve_cell(CPU, 40.0), _serve_cell(LAVAPIPE, 99.0, ok=False))
    best = results.best(settings, SHA, "none", "serve:tps@4")
    assert best is not None and best.backend == "cpu"


def test_compare_puts_serving_throughput_per_level_side_by_side(
    settings: config.Settings,
) -> None:
    a = results.get_run(settings, _serve_run(settings, _serve_cell(CPU, 40.0)))
    b = results.get_run(settings, _serve_run(settings, _serve_cell(CPU, 50.0)))
    changes = {c.test: c for c in results.compare(a, b)}
    assert set(changes) == {"serve:tps@1", "serve:tps@4"}
    assert changes["serve:tps@4"].change_pct == pytest.approx(25.0)
    assert changes["serve:tps@4"].verdict == "faster"
    assert changes["serve:tps@1"].verdict == "within noise"


def test_serve_table_and_exports_show_percentiles_per_level(settings: config.Settings) -> None:
    detail = results.get_run(
        settings, _serve_run(settings, _serve_cell(CPU, 40.0), _serve_cell(LAVAPIPE, 20.0))
    )
    rows = serve_report.serve_rows(detail.run.id, detail.cells)
    assert [(r.backend, r.concurrency, r.relative) for r in rows] == [
        ("cpu", 1, 1.0), ("cpu", 4, 1.0), ("vulkan", 1, 1.0), ("vulkan", 4, 0.5),
    ]  # fmt: skip
    table = serve_report.serve_table(rows)
    assert "10/12/13" in table and "8/8" in table and "0.50x" in table
    assert (
        "load generator CPU at its highest share, cpu at 1 client: 0.05 s vs the server's "
        "5.00 s (1.0 %)"
    ) in table
    csv_text = report.export([detail], "csv")
    assert csv_text.splitlines()[0].startswith("run,model,backend,driver,device,clients")
    assert len(csv_text.splitlines()) == 5
    exported = to_json(report.export_document([detail]))[0]
    assert exported["run"]["params"]["mode"] == "serve"
    assert exported["serving"][3]["output_tps"] == 20.0
    assert report.export([detail], "md").startswith("| run ")
    assert " clients " in report.export([detail], "md").splitlines()[0]


def test_llama_servers_own_device_line_proves_a_vulkan_cell_ran_on_lavapipe() -> None:
    from vkrama.bench import stderr

    log = (Path(__file__).parent / "data" / "bench" / "server-vulkan-llvmpipe.stderr").read_text()
    observed = stderr.observe(log)
    reason, device = stderr.verify("vulkan", "lavapipe", observed, [])
    assert reason is None and device is not None
    assert device.label == "llvmpipe (LLVM 22.1.8, 256 bits)"
    # The same server's log does not pass for a CUDA cell: nothing of CUDA was used.
    assert stderr.verify("cuda", None, observed, [])[0] is not None
