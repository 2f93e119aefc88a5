"""Runs whose vkrama died are marked abandoned; old results files stay readable; each cell
keeps the host's load around it and every report warns about a busy host."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest
from bench_fakes import SCHEMA_1, cell, info

from vkrama import config, results
from vkrama.bench.hostload import LoadWatch
from vkrama.results import db, owner, report
from vkrama.results.records import HostLoad

BUSY = HostLoad(cpus=2, load_before=1.02, load_after=1.97, others_cpus=0.93)
QUIET = HostLoad(cpus=2, load_before=0.1, load_after=0.2, others_cpus=0.02, gpu_users_before=())

# The version-1 schema as vkrama 0.1.0 wrote it (before owners and host load).
V1_SCHEMA = (
    SCHEMA_1
    + """
INSERT INTO runs VALUES (1, '2026-11-01T10:00:00+00:00', NULL, 'running', 'box', '6.1', '[]',
 'none', 'tiny', 'abab', '{"n_prompt": 64, "n_gen": 16}', '0.1.0');
INSERT INTO cells VALUES (1, 1, 0, 'cpu', NULL, 'CPU', 'ok', '', 'localhost/vkrama/cpu:latest',
 'sha256:c', '{}', '[]', NULL, '', 1.5);
INSERT INTO measurements VALUES (1, 1, 'tg16', 0, 16, 2900.0, 10.0, '[2890.0, 2910.0]', 'CPU', '');
PRAGMA user_version = 1;
"""
)


def test_a_version_1_results_file_is_migrated_in_place_and_reads_back(
    settings: config.Settings,
) -> None:
    path = db.db_path(settings)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SCHEMA)
    detail = results.get_run(settings, 1)
    assert detail.run.status == "running" and detail.run.info.owner is None
    assert detail.cells[0].measurements[0].tps == 2900.0
    assert detail.cells[0].host_load is None and detail.cells[0].busy_host == ""
    assert results.abandon_dead_runs(settings, host="box") == []  # no owner: never judged
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION


def dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


@pytest.mark.parametrize(
    ("who", "dead"),
    [
        pytest.param(lambda: owner.current(os.getpid()), False, id="this-live-process-is-alive"),
        pytest.param(
            lambda: owner.RunOwner(dead_pid(), 1, owner.boot_id()), True, id="a-gone-pid-is-dead"
        ),
        pytest.param(
            lambda: owner.RunOwner(os.getpid(), 1, owner.boot_id()),
            True,
            id="a-reused-pid-with-another-start-time-is-dead",
        ),
        pytest.param(
            lambda: owner.RunOwner(os.getpid(), owner.start_ticks(os.getpid()) or 0, "other-boot"),
            True,
            id="a-run-of-an-earlier-boot-is-dead",
        ),
    ],
)
def test_a_runs_owner_is_dead_only_when_sure(who: object, dead: bool) -> None:
    found = who()  # type: ignore[operator]
    assert owner.is_dead(found) is dead


def test_dead_runs_of_this_host_are_abandoned_others_are_left(settings: config.Settings) -> None:
    gone = owner.RunOwner(dead_pid(), 1, owner.boot_id())
    here = socket.gethostname()
    dead_run = results.start_run(settings, info(host=here, owner=gone, token="dead1"))
    live_run = results.start_run(
        settings, info(host=here, owner=owner.current(os.getpid()), token="live1")
    )
    elsewhere = results.start_run(settings, info(host="other-box", owner=gone, token="far1"))
    marked = results.abandon_dead_runs(settings)
    assert [r.id for r in marked] == [dead_run]
    status = {r.id: r.status for r in results.list_runs(settings)}
    assert status == {dead_run: "abandoned", live_run: "running", elsewhere: "running"}
    assert results.abandoned_tokens(settings) == {"dead1"}


def test_a_cells_host_load_is_stored_and_every_report_warns(settings: config.Settings) -> None:
    from dataclasses import replace

    run_id = results.start_run(settings, info())
    results.add_cell(settings, run_id, 0, replace(cell("cpu", None, 18000, 2900), host_load=BUSY))
    lava = replace(cell("vulkan", "lavapipe", 370, 90), host_load=QUIET)
    results.add_cell(settings, run_id, 1, lava)
    results.finish_run(settings, run_id, results.RunStatus.OK)
    detail = results.get_run(settings, run_id)
    assert detail.cells[0].host_load == BUSY and detail.cells[1].host_load == QUIET
    warning = (
        "cpu ran on a busy host (other processes kept 0.93 of 2 CPUs busy;"
        " load 1.02 before, 1.97 after): its numbers may be low"
    )
    table = report.bench_table(report.rows_of(detail)).splitlines()
    assert f"warning: {warning}" in table  # under the rows, before the verdicts
    assert sum("warning" in line for line in table) == 1
    md = report.export([detail], "md").splitlines()
    assert md[-1] == f"- warning: run {run_id}, {warning}"
    csv = report.export([detail], "csv").splitlines()
    assert ",reason,busy host,cold counted," in csv[0] and "0.93 of 2 CPUs" in csv[1]
    assert "0.93" not in csv[3]
    best = results.best(settings, info().model_sha256, "none", "tg")
    assert best is not None and best.backend == "cpu"
    assert best.reason.endswith(
        "; warning: cpu was measured on a busy host (other processes kept 0.93 of 2 CPUs busy;"
        " load 1.02 before, 1.97 after), rerun the bench"
    )


@pytest.mark.parametrize(
    ("load", "says"),
    [
        pytest.param(QUIET, "", id="a-quiet-host-says-nothing"),
        pytest.param(HostLoad(cpus=2), "", id="nothing-known-says-nothing"),
        pytest.param(
            HostLoad(cpus=1, others_cpus=0.0, gpu_users_after=("4242 python3 1200 MiB",)),
            "the GPU was in use by 4242 python3 1200 MiB",
            id="another-gpu-user-is-busy",
        ),
    ],
)
def test_what_counts_as_busy(load: HostLoad, says: str) -> None:
    assert load.busy == says
    assert HostLoad.from_dict(load.to_dict()) == load


def test_proc_files_are_read_as_the_kernel_writes_them(tmp_path: Path) -> None:
    # /proc/stat: cpu user nice system idle iowait irq softirq steal guest guest_nice
    (tmp_path / "stat").write_text("cpu  100 5 50 9000 30 2 3 4 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    (tmp_path / "loadavg").write_text("1.52 0.80 0.33 3/214 31337\n")
    (tmp_path / "77").mkdir()
    # a comm with spaces and parentheses; utime stime cutime cstime = 40 11 2 1
    fields = ["R"] + ["0"] * 10 + ["40", "11", "2", "1"] + ["0"] * 4 + ["123456"] + ["0"] * 30
    (tmp_path / "77" / "stat").write_text(f"77 (llama (bench) x) {' '.join(fields)}\n")
    watch = LoadWatch(proc=tmp_path, gpu_users=lambda: None)
    assert watch.host_busy_ticks() == 100 + 5 + 50 + 2 + 3 + 4
    assert watch.loadavg() == 1.52
    assert watch.process_ticks(77) == 54
    assert owner.start_ticks(77, tmp_path) == 123456
    assert watch.process_ticks(78) is None
