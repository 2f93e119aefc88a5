"""The results store (SQLite in VKRAMA_HOME), compare, best and the exports."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from dataclasses import replace

import pytest
from bench_fakes import SHA, cell, store_run

from vkrama import config, results
from vkrama.bench import imports
from vkrama.cli.console import to_json
from vkrama.errors import ExitStatus, VkramaError
from vkrama.results import db, report
from vkrama.results.records import CellResult, read_status
from vkrama.results.records import test_name as name_of_test


def test_a_stored_run_reads_back_with_every_sample_provenance_and_raw_json(
    settings: config.Settings,
) -> None:
    run_id = store_run(settings, cell("cpu", None, 800, 30), cell("vulkan", "lavapipe", 230, 118))
    detail = results.get_run(settings, run_id)
    assert detail.run.status == "ok" and detail.run.finished
    assert detail.run.info.model_sha256 == SHA
    assert [c.backend for c in detail.cells] == ["cpu", "vulkan"]
    assert detail.cells[1] == cell("vulkan", "lavapipe", 230, 118)
    assert results.get_run(settings, "latest").run.id == run_id
    assert (db.db_path(settings)).parent == settings.home


def test_list_is_newest_first_with_cell_counts(settings: config.Settings) -> None:
    assert results.list_runs(settings) == []
    first = store_run(settings, cell("cpu", None, 800, 30))
    second = store_run(
        settings, cell("cpu", None, 800, 30), cell("vulkan", "lavapipe", 0, 0, ok=False)
    )
    listed = results.list_runs(settings)
    assert [(r.id, r.cell_count, r.ok_count) for r in listed] == [(second, 2, 1), (first, 1, 1)]


@pytest.mark.parametrize("ref", ["42", "nope"], ids=["unknown-id", "not-a-number"])
def test_unknown_run_is_not_found_with_a_hint(settings: config.Settings, ref: str) -> None:
    store_run(settings, cell("cpu", None, 1, 1))
    with pytest.raises(VkramaError) as caught:
        results.get_run(settings, ref)
    assert caught.value.status == ExitStatus.NOT_FOUND and "results list" in (
        caught.value.hint or ""
    )


def test_show_without_any_store_says_how_to_make_one(settings: config.Settings) -> None:
    with pytest.raises(VkramaError, match="no bench results stored yet"):
        results.get_run(settings, "latest")


def test_a_database_from_a_newer_schema_is_refused_not_rewritten(settings: config.Settings) -> None:
    settings.home.mkdir(parents=True)
    conn = sqlite3.connect(db.db_path(settings))
    conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(VkramaError) as caught:
        results.list_runs(settings)
    assert caught.value.status == ExitStatus.CONFIG


CHANGES = [
    ("identical-rerun-is-within-noise", 100.0, 101.0, 2.0, "within noise", False),
    ("clear-speedup-beyond-two-sigma", 100.0, 120.0, 2.0, "faster", True),
    ("clear-slowdown", 100.0, 80.0, 2.0, "slower", True),
    ("big-change-but-noisier-still", 100.0, 120.0, 15.0, "within noise", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("a", "b", "sd", "verdict", "significant"),
    [c[1:] for c in CHANGES],
    ids=[c[0] for c in CHANGES],
)
def test_compare_says_whether_a_change_exceeds_the_noise(
    settings: config.Settings, a: float, b: float, sd: float, verdict: str, significant: bool
) -> None:
    run_a = store_run(settings, cell("cpu", None, a, a, sd))
    run_b = store_run(settings, cell("cpu", None, b, b, sd))
    changes = results.compare(results.get_run(settings, run_a), results.get_run(settings, run_b))
    assert [c.test for c in changes] == ["pp64", "tg16"]
    assert changes[0].verdict == verdict and changes[0].significant is significant
    assert changes[0].change_pct == pytest.approx((b - a) / a * 100)


def test_compare_names_cells_missing_or_failed_in_one_run(settings: config.Settings) -> None:
    run_a = store_run(settings, cell("cpu", None, 100, 10), cell("vulkan", "radv", 0, 0, ok=False))
    run_b = store_run(
        settings,
        cell("cpu", None, 100, 10),
        cell("vulkan", "radv", 60, 6),
        cell("vulkan", "lavapipe", 50, 5),
    )
    changes = results.compare(results.get_run(settings, run_a), results.get_run(settings, run_b))
    verdicts = {(c.driver, c.test): c.verdict for c in changes}
    assert verdicts == {
        (None, "pp64"): "within noise",
        (None, "tg16"): "within noise",
        ("radv", "pp64"): "failed in A",
        ("radv", "tg16"): "failed in A",
        ("lavapipe", "pp64"): "only in B",
        ("lavapipe", "tg16"): "only in B",
    }


def test_best_picks_the_fastest_cell_by_its_newest_result(settings: config.Settings) -> None:
    assert results.best(settings, SHA, "none") is None
    store_run(settings, cell("cpu", None, 800, 30), cell("vulkan", "lavapipe", 230, 118))
    store_run(settings, cell("cpu", None, 800, 300), gpu_key="1002:744c")  # another GPU
    store_run(settings, cell("vulkan", "lavapipe", 0, 0, ok=False))  # a failed rerun
    store_run(settings, cell("cpu", None, 820, 31))  # a cpu-only rerun
    tg = results.best(settings, SHA, "none")
    assert tg is not None and (tg.backend, tg.driver, tg.test, tg.run_id) == (
        "vulkan", "lavapipe", "tg16", 1,
    )  # fmt: skip
    assert "bench run 1" in tg.reason and "vs cpu at 31.0 t/s (run 4)" in tg.reason
    pp = results.best(settings, SHA, "none", metric="pp")
    assert pp is not None and (pp.backend, pp.tps, pp.run_id) == ("cpu", 820, 4)
    assert results.best(settings, "cd" * 32, "none") is None


def test_best_ranks_only_the_newest_test_shape(settings: config.Settings) -> None:
    store_run(settings, cell("vulkan", "lavapipe", 230, 118))
    newer = cell("cpu", None, 800, 30)
    newer = replace(
        newer, measurements=tuple(replace(m, test="tg128", n_gen=128) for m in newer.measurements)
    )
    store_run(settings, newer)
    found = results.best(settings, SHA, "none")
    assert found is not None and (found.backend, found.test) == ("cpu", "tg128")


def test_bench_rows_have_relative_speed_and_failed_cells_get_one_row_per_test() -> None:
    rows = report.rows(
        7,
        [
            cell("cpu", None, 800, 30),
            cell("vulkan", "lavapipe", 200, 120),
            cell("vulkan", "radv", 0, 0, ok=False),
        ],
        ["pp64", "tg16"],
    )
    assert [(r.backend, r.driver, r.test, r.relative, r.status) for r in rows] == [
        ("cpu", None, "pp64", 1.0, "ok"),
        ("cpu", None, "tg16", 0.25, "ok"),
        ("vulkan", "lavapipe", "pp64", 0.25, "ok"),
        ("vulkan", "lavapipe", "tg16", 1.0, "ok"),
        ("vulkan", "radv", "pp64", None, "failed"),
        ("vulkan", "radv", "tg16", None, "failed"),
    ]
    assert {r.run_id for r in rows} == {7}
    table = report.bench_table(rows)
    assert "800.00 ± 1.00" in table and "vulkan/radv: ggml_vulkan: No devices found" in table


def test_exports(settings: config.Settings) -> None:
    run_id = store_run(settings, cell("cpu", None, 800, 30), cell("vulkan", "lavapipe", 230, 118))
    detail = [results.get_run(settings, run_id)]
    md = report.export(detail, "md").splitlines()
    assert md[0].startswith("|   run | model") or md[0].startswith("| run")
    assert "| vulkan" in md[4] and "230.00" in md[4] and "Mesa 26.2.6-1" in md[4]
    rows = list(csv.DictReader(io.StringIO(report.export(detail, "csv"))))
    assert [r["test"] for r in rows] == ["pp64", "tg16", "pp64", "tg16"]
    data = to_json(report.export_document(detail))
    assert data[0]["run"]["model_sha256"] == SHA
    assert data[0]["provenance"][1]["llama_cpp_build"] == "11669"
    assert data[0]["rows"][2]["samples"] == [229.0, 231.0]


def test_exports_say_why_a_cell_failed(settings: config.Settings) -> None:
    broken = replace(
        cell("vulkan", "nvidia", 0, 0),
        status=results.CellStatus.FAILED,
        reason="ggml announced no Vulkan device: llama.cpp fell back to the CPU",
        measurements=(),
    )
    run_id = store_run(settings, cell("cpu", None, 800, 30), broken)
    detail = [results.get_run(settings, run_id)]
    md = report.export(detail, "md").splitlines()
    assert md[-1] == (
        f"- run {run_id}, vulkan/nvidia failed: "
        "ggml announced no Vulkan device: llama.cpp fell back to the CPU"
    )
    rows = list(csv.DictReader(io.StringIO(report.export(detail, "csv"))))
    assert [r["reason"] for r in rows if r["backend"] == "vulkan"] == [broken.reason] * 2
    assert [r["reason"] for r in rows if r["backend"] == "cpu"] == ["", ""]


NO_KFD = "no AMD GPU, no /dev/kfd"


def test_an_unavailable_cell_is_its_own_status_stored_shown_and_exported(
    settings: config.Settings,
) -> None:
    never_ran = CellResult("rocm", None, "-", results.CellStatus.UNAVAILABLE, NO_KFD)
    run_id = store_run(settings, cell("cpu", None, 800, 30), never_ran)
    detail = results.get_run(settings, run_id)
    assert detail.cells[1] == never_ran
    table = report.bench_table(report.rows(run_id, detail.cells, ["pp64"])).splitlines()
    assert table[4].split() == ["rocm", "-", "-", "pp64", "-", "-", "-", "unavailable"]
    assert table[5] == f"rocm: unavailable: {NO_KFD}"
    assert report.export([detail], "md").splitlines()[-1] == (
        f"- run {run_id}, rocm unavailable: {NO_KFD}"
    )
    rows = to_json(report.export_document([detail]))[0]["rows"]
    assert [(r["status"], r["reason"]) for r in rows if r["backend"] == "rocm"] == [
        ("unavailable", NO_KFD)
    ] * 2  # one row per test, as for a failed cell


def test_a_schema_6_file_reads_its_unavailable_prefixed_failures_as_unavailable(
    settings: config.Settings,
) -> None:
    # Before schema 7, an unavailable cell was stored `failed` with its reason prefixed.
    settings.home.mkdir(parents=True)
    conn = sqlite3.connect(db.db_path(settings))
    old = "".join(db._MIGRATIONS[step] for step in (4, 5, 6))
    conn.executescript(db._SCHEMA + old + "PRAGMA user_version = 6;")
    conn.execute(
        "INSERT INTO runs (started, status, host, kernel, gpus, gpu_key, model_name,"
        " model_sha256, params, vkrama_version) VALUES"
        " ('2026-01-01', 'failed', 'h', 'k', '[]', 'none', 'tiny', ?, '{}', '0.0.9')",
        (SHA,),
    )
    for position, (backend, reason) in enumerate(
        [("rocm", f"unavailable: {NO_KFD}"), ("vulkan", "exit 1: unavailable: a device")]
    ):
        conn.execute(
            "INSERT INTO cells (run_id, position, backend, driver, device, status, reason,"
            " image, image_id, provenance, command, stderr_tail, duration_s) VALUES"
            " (1, ?, ?, NULL, '-', 'failed', ?, '', '', '{}', '[]', '', 0)",
            (position, backend, reason),
        )
    conn.commit()
    conn.close()
    cells = results.get_run(settings, 1).cells
    assert [(c.backend, c.status, c.reason) for c in cells] == [
        ("rocm", results.CellStatus.UNAVAILABLE, NO_KFD),
        ("vulkan", results.CellStatus.FAILED, "exit 1: unavailable: a device"),
    ]
    with sqlite3.connect(db.db_path(settings)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 14


READ_STATUS = [
    ("an-older-exports-prefixed-failure-is-unavailable", ("failed", f"unavailable: {NO_KFD}"),
     (results.CellStatus.UNAVAILABLE, NO_KFD)),
    ("a-new-export-says-unavailable-itself", ("unavailable", NO_KFD),
     (results.CellStatus.UNAVAILABLE, NO_KFD)),
    ("a-failure-mentioning-unavailable-later-stays-failed", ("failed", "exit 1: unavailable: x"),
     (results.CellStatus.FAILED, "exit 1: unavailable: x")),
    ("an-ok-cell-is-ok", ("ok", ""), (results.CellStatus.OK, "")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stored", "read"), [r[1:] for r in READ_STATUS], ids=[r[0] for r in READ_STATUS]
)
def test_read_status_takes_what_older_vkramas_wrote(
    stored: tuple[str, str], read: tuple[results.CellStatus, str]
) -> None:
    assert read_status(*stored) == read


# The results schema as vkrama 0.1 wrote it (user_version 1), before runs kept model facts.
SCHEMA_1_RUNS = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT NOT NULL, finished TEXT,
    status TEXT NOT NULL, host TEXT NOT NULL, kernel TEXT NOT NULL, gpus TEXT NOT NULL,
    gpu_key TEXT NOT NULL, model_name TEXT NOT NULL, model_sha256 TEXT NOT NULL,
    params TEXT NOT NULL, vkrama_version TEXT NOT NULL);
"""


def test_a_schema_1_database_is_migrated_and_its_runs_read_without_model_facts(
    settings: config.Settings,
) -> None:
    # Build the old file from schema 2 minus its one new column, so cells and measurements
    # stay exactly what both versions share.
    settings.home.mkdir(parents=True)
    conn = sqlite3.connect(db.db_path(settings))
    shared = db._SCHEMA.split("CREATE TABLE cells", 1)[1]
    shared = shared.replace(
        ",\n    n_depth INTEGER NOT NULL DEFAULT 0  -- llama-bench -d (schema 3)", ""
    )
    assert "n_depth" not in shared
    conn.executescript(f"{SCHEMA_1_RUNS}CREATE TABLE cells{shared}")
    conn.execute(
        "INSERT INTO runs (started, finished, status, host, kernel, gpus, gpu_key, model_name,"
        " model_sha256, params, vkrama_version) VALUES ('2026-11-01T10:00:00+00:00', NULL,"
        " 'ok', 'old', '6.1', '[]', 'none', 'tiny', ?, '{}', '0.1.0')",
        (SHA,),
    )
    conn.execute(
        "INSERT INTO cells VALUES (1, 1, 0, 'cuda', NULL, 'NVIDIA H100 80GB HBM3', 'ok', '',"
        " 'localhost/vkrama/cuda:latest', 'sha256:c', '{}', '[]', NULL, '', 24.4)"
    )
    conn.execute(
        "INSERT INTO measurements VALUES (1, 1, 'tg128', 0, 128, 290.8, 0.7, '[290.8]', 'CUDA', '')"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    old = results.get_run(settings, 1)
    assert old.run.info.model == {} and old.run.info.host == "old"
    (m,) = old.cells[0].measurements  # measured before depth existed: at depth 0
    assert (m.test, m.tps, m.n_depth, m.flags) == ("tg128", 290.8, 0, {})
    assert (m.cold_samples, m.cold_counted) == ((), False)  # counted every repetition, unsaid
    assert old.cells[0].gpus == ()  # stored before GPU sets were: not known
    assert report.run_header(old)[1].startswith("model  tiny (no header facts: stored by an older")
    new_id = store_run(settings, cell("cpu", None, 800, 30))
    assert results.get_run(settings, new_id).run.info.model["architecture"] == "llama"
    with sqlite3.connect(db.db_path(settings)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 14


def test_show_and_exports_name_the_models_facts(settings: config.Settings) -> None:
    detail = results.get_run(settings, store_run(settings, cell("cpu", None, 800, 30)))
    facts = "tiny: llama, 3.93 M params, F16, 7.51 MiB"
    assert report.run_header(detail)[1] == f"model  {facts}  sha256 {SHA}"
    assert report.export([detail], "md").splitlines()[-1] == f"- run 1 model {facts}"
    row = next(csv.DictReader(io.StringIO(report.export([detail], "csv"))))
    assert (row["architecture"], row["parameters"], row["quantization"], row["model bytes"]) == (
        "llama", "3934464", "F16", "7873536",
    )  # fmt: skip
    assert to_json(report.export_document([detail]))[0]["run"]["model"]["size"] == 7_873_536


VERDICTS = [
    ("clear-winner-beyond-noise", (900, 5), (300, 5), "cpu", 3.0, True),
    ("close-and-noisy-is-within-noise", (310, 20), (300, 20), "cpu", 310 / 300, False),
    ("runner-up-first-in-order-still-loses", (100, 1), (300, 1), "vulkan/lavapipe", 3.0, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cpu_tg", "vk_tg", "winner", "ratio", "significant"),
    [v[1:] for v in VERDICTS],
    ids=[v[0] for v in VERDICTS],
)
def test_verdict_names_the_fastest_cell_its_ratio_and_whether_it_beats_the_noise(
    cpu_tg: tuple[float, float],
    vk_tg: tuple[float, float],
    winner: str,
    ratio: float,
    significant: bool,
) -> None:
    cells = [
        cell("cpu", None, 800, cpu_tg[0], sd=cpu_tg[1]),
        cell("vulkan", "lavapipe", 200, vk_tg[0], sd=vk_tg[1]),
    ]
    tg = results.verdicts(cells)[1]
    assert (tg.test, tg.winner, tg.significant) == ("tg16", winner, significant)
    assert tg.ratio == pytest.approx(ratio)


def test_verdict_lines_read_as_sentences_and_skip_failed_cells() -> None:
    cells = [
        cell("cpu", None, 800, 30, sd=2),
        cell("vulkan", "lavapipe", 230, 118, sd=2),
        cell("vulkan", "radv", 0, 0, ok=False),
    ]
    assert [v.line for v in results.verdicts(cells)] == [
        "pp64: cpu fastest at 800.0 ± 2.0 t/s, 3.48x vulkan/lavapipe: beyond noise",
        "tg16: vulkan/lavapipe fastest at 118.0 ± 2.0 t/s, 3.93x cpu: beyond noise",
    ]
    alone = results.verdicts(cells[:1])[0]
    assert alone.line == "pp64: cpu fastest at 800.0 ± 2.0 t/s (the only cell measured)"


# -- depth: a dimension of every measurement, row, export and comparison ----------------------


def at_depths(c: CellResult, *depths: int, scale: float = 1.0) -> CellResult:
    """The cell measured at several depths (tg slows down as the context fills)."""
    found = tuple(
        replace(
            m,
            test=name_of_test(m.n_prompt, m.n_gen, None, d),
            n_depth=d,
            tps=m.tps * scale / (1 + d / 4096),
        )
        for d in depths
        for m in c.measurements
    )
    return replace(c, measurements=found)


def test_depth_is_stored_shown_and_exported(settings: config.Settings) -> None:
    run_id = store_run(
        settings,
        at_depths(cell("cuda", None, 11841, 290), 0, 4096),
        params={"n_prompt": 64, "n_gen": 16, "repetitions": 2, "depth": [0, 4096]},
    )
    detail = results.get_run(settings, run_id)
    assert [(m.test, m.n_depth) for m in detail.cells[0].measurements] == [
        ("pp64", 0), ("tg16", 0), ("pp64 @ d4096", 4096), ("tg16 @ d4096", 4096),
    ]  # fmt: skip
    assert [r.depth for r in report.rows_of(detail)] == [0, 0, 4096, 4096]
    csv_rows = list(csv.DictReader(io.StringIO(report.export([detail], "csv"))))
    assert [(r["test"], r["depth"]) for r in csv_rows][2] == ("pp64 @ d4096", "4096")
    md = report.export([detail], "md").splitlines()
    assert md[0].split("|")[7].strip() == "depth" and md[4].split("|")[7].strip() == "4096"
    assert "tg16 @ d4096" in report.bench_table(report.rows_of(detail))
    assert to_json(report.export_document([detail]))[0]["rows"][3]["depth"] == 4096
    assert "d0,4096" in report.runs_table(results.list_runs(settings))


def test_a_failed_cell_gets_a_row_per_test_and_depth(settings: config.Settings) -> None:
    broken = cell("vulkan", "nvidia", 0, 0, ok=False)
    run_id = store_run(settings, broken, params={"n_prompt": 64, "n_gen": 16, "depth": [0, 512]})
    found = report.rows_of(results.get_run(settings, run_id))
    assert [(r.test, r.depth) for r in found] == [
        ("pp64", 0), ("tg16", 0), ("pp64 @ d512", 512), ("tg16 @ d512", 512),
    ]  # fmt: skip


def test_compare_matches_depth_with_depth(settings: config.Settings) -> None:
    a = store_run(settings, at_depths(cell("cuda", None, 1000, 100), 0, 4096))
    b = store_run(settings, at_depths(cell("cuda", None, 1000, 100), 0, 4096, scale=2.0))
    changes = results.compare(results.get_run(settings, a), results.get_run(settings, b))
    assert [(c.test, round(c.change_pct or 0)) for c in changes] == [
        ("pp64", 100), ("tg16", 100), ("pp64 @ d4096", 100), ("tg16 @ d4096", 100),
    ]  # fmt: skip


def test_best_ranks_at_depth_zero_and_says_so(settings: config.Settings) -> None:
    # vulkan wins at depth 16384 only; a new chat starts at depth 0, where cuda wins.
    cuda = at_depths(cell("cuda", None, 11841, 290), 0, 16384)
    vulkan = at_depths(cell("vulkan", "nvidia", 9644, 242), 0, 16384)
    vulkan = replace(
        vulkan,
        measurements=tuple(
            replace(m, tps=m.tps * 10) if m.n_depth else m for m in vulkan.measurements
        ),
    )
    store_run(settings, cuda, vulkan)
    found = results.best(settings, SHA, "none")
    assert found is not None and (found.backend, found.test) == ("cuda", "tg16")
    assert found.reason.startswith("fastest tg16 at depth 0: cuda on CPU at 290.0")


def test_each_depth_gets_its_own_verdict_and_rows_carry_their_tests_verdict(
    settings: config.Settings,
) -> None:
    cuda = at_depths(cell("cuda", None, 1000, 100, sd=0.1), 0, 4096)
    vulkan = at_depths(cell("vulkan", "nvidia", 1100, 50, sd=0.1), 0, 4096)
    found = results.verdicts([cuda, vulkan])
    assert [(v.test, v.winner, round(v.ratio or 0, 2), v.significant) for v in found] == [
        ("pp64", "vulkan/nvidia", 1.1, True),
        ("tg16", "cuda", 2.0, True),
        ("pp64 @ d4096", "vulkan/nvidia", 1.1, True),
        ("tg16 @ d4096", "cuda", 2.0, True),
    ]
    rows = report.rows(1, [cuda, vulkan])
    assert {r.test: r.verdict for r in rows} == {v.test: v.line for v in found}
    assert report.bench_table(rows).splitlines()[-4:] == [v.line for v in found]
    run_id = store_run(settings, cuda, vulkan)
    data = to_json(report.export_document([results.get_run(settings, run_id)]))[0]
    assert [v["line"] for v in data["verdicts"]] == [v.line for v in found]
    assert data["verdicts"][3]["test"] == "tg16 @ d4096" and data["verdicts"][3]["ratio"] == 2.0
    md = report.export([results.get_run(settings, run_id)], "md").splitlines()
    assert f"- run {run_id}, {found[-1].line}" in md and md[-1].startswith(f"- run {run_id} model")


def test_each_rows_llama_bench_settings_are_stored_and_read_back(
    settings: config.Settings,
) -> None:
    swept = cell("cpu", None, 800, 30)
    flags = {"ub": "256", "b": "2048", "fa": "on", "ctk": "q8_0", "ctv": "q8_0"}
    first = replace(swept.measurements[0], test="pp64 ub=256", flags=flags)
    run_id = store_run(settings, replace(swept, measurements=(first, swept.measurements[1])))
    back = results.get_run(settings, run_id).cells[0].measurements
    assert (back[0].test, back[0].flags) == ("pp64 ub=256", flags)
    assert back[1].flags == {}


def test_a_cold_repetition_is_stored_and_a_counted_one_is_said_everywhere(
    settings: config.Settings,
) -> None:
    vulkan = cell("vulkan", "lavapipe", 800, 30)
    pp, tg = vulkan.measurements
    dropped = replace(pp, samples=(800.0, 810.0), cold_samples=(260.0,))
    counted = replace(tg, samples=(12.0,), cold_counted=True)  # `-r 1` given through
    run_id = store_run(settings, replace(vulkan, measurements=(dropped, counted)))
    detail = results.get_run(settings, run_id)
    back = detail.cells[0].measurements
    assert [(m.samples, m.cold_samples, m.cold_counted) for m in back] == [
        ((800.0, 810.0), (260.0,), False),
        ((12.0,), (), True),
    ]
    table = report.run_table(detail).splitlines()
    assert [line.split()[-3] for line in table[2:4]] == ["2", "(cold)"]
    warning = "warning: vulkan/lavapipe: its samples include the cold first repetition"
    assert any(line.startswith(warning) for line in table)
    rows = to_json(report.export_document([detail]))[0]["rows"]
    assert [(r["cold_samples"], r["cold_counted"]) for r in rows] == [([260.0], False), ([], True)]
    assert f"- warning: run {run_id}, vulkan/lavapipe: its samples" in report.export([detail], "md")
    csv_rows = list(csv.DictReader(io.StringIO(report.export([detail], "csv"))))
    assert [r["cold counted"] for r in csv_rows] == ["", "yes"]
    document = json.dumps(to_json(report.export_document([detail])))
    (imported,) = imports.import_text(settings, document, "export.json")
    again = results.get_run(settings, imported.run_id).cells[0].measurements
    assert [(m.cold_samples, m.cold_counted) for m in again] == [((260.0,), False), ((), True)]


def test_the_sycl_cpu_device_is_shown_but_never_named_in_a_verdict() -> None:
    # Its row says "a test of the SYCL path, not a contender": a verdict line that called it
    # the runner-up (as one did on 2026-12-07: "cpu fastest ..., 1.50x oneapi/opencl-cpu")
    # would rank it after all. lavapipe stays ranked, as the README's tour shows.
    cpu = cell("cpu", None, 5000, 4000, sd=10)
    sycl = cell("oneapi", "opencl-cpu", 3400, 170, sd=10)
    lavapipe = cell("vulkan", "lavapipe", 490, 120, sd=10)
    found = results.verdicts([cpu, sycl, lavapipe])
    assert [(v.winner, v.runner_up) for v in found] == [
        ("cpu", "vulkan/lavapipe"),
        ("cpu", "vulkan/lavapipe"),
    ]
    alone = results.verdicts([sycl])
    assert alone == []
