"""Several vkrama processes opening one results store at once: a new one, or one of each
older schema this test can build, is created or migrated by exactly one of them, and none
crashes (issue 32: two `vkrama tune` on an empty home, one died with `table runs already
exists`)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
import traceback
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from bench_fakes import SCHEMA_1, SHA, cell, store_run

from vkrama import config, results
from vkrama.results import db

PROCESSES = 6
ROUNDS_NEW = 10  # the race is a matter of luck: many rounds make a miss unlikely
ROUNDS_OLD = 2  # per old version (ten of them)
JOIN_S = 300  # a generous bound on a loaded 2-core box; no one waits it out when all is well

OLD_RUN = (
    "INSERT INTO runs (started, status, host, kernel, gpus, gpu_key, model_name, model_sha256,"
    " params, vkrama_version) VALUES ('2026-01-01', 'ok', 'old', 'k', '[]', 'none', 'tiny', ?,"
    " '{}', '0.0.9')"
)


def old_store(path: Path, version: int) -> None:
    """A results file as the vkrama of schema `version` left it, holding one run."""
    if version <= 2:
        script = SCHEMA_1 + (db._MIGRATIONS[2] if version == 2 else "")
    else:  # db._SCHEMA is schema 3; the later ones added what their steps add
        script = db._SCHEMA + "".join(db._MIGRATIONS[s] for s in range(4, version + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(script + f"PRAGMA user_version = {version};")
    conn.execute(OLD_RUN, (SHA,))
    conn.commit()
    conn.close()


def columns(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    found = {t: [c[1] for c in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    conn.close()
    return found


def one_process(settings: config.Settings, barrier: Barrier) -> None:
    """Wait for the others, then open the store and write a run, as a bench does."""
    try:
        barrier.wait()
        store_run(settings, cell("cpu", None, 800, 30))
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)


def race(settings: config.Settings) -> list[int | None]:
    """PROCESSES processes released at once by a barrier; their exit codes."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=one_process, args=(settings, barrier)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_S)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return codes


def at(home: Path, monkeypatch: pytest.MonkeyPatch) -> config.Settings:
    monkeypatch.setenv("VKRAMA_HOME", str(home))
    return config.load()


@pytest.fixture
def fresh_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The tables and columns of a store one process made alone."""
    alone = at(tmp_path / "alone", monkeypatch)
    store_run(alone, cell("cpu", None, 800, 30))
    return columns(db.db_path(alone))


def test_processes_started_at_once_on_a_new_store_all_write_their_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_columns: dict[str, list[str]]
) -> None:
    for n in range(ROUNDS_NEW):
        settings = at(tmp_path / f"new-{n}", monkeypatch)
        assert race(settings) == [0] * PROCESSES, f"round {n}: a process crashed (stderr)"
        assert len(results.list_runs(settings)) == PROCESSES
        assert columns(db.db_path(settings)) == fresh_columns


@pytest.mark.parametrize("version", range(1, db.SCHEMA_VERSION))
def test_processes_started_at_once_on_an_old_store_migrate_it_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    version: int,
    fresh_columns: dict[str, list[str]],
) -> None:
    for n in range(ROUNDS_OLD):
        settings = at(tmp_path / f"v{version}-{n}", monkeypatch)
        old_store(db.db_path(settings), version)
        assert race(settings) == [0] * PROCESSES, f"round {n}: a process crashed (stderr)"
        runs = results.list_runs(settings)
        assert sorted(r.info.host for r in runs) == ["box"] * PROCESSES + ["old"]
        conn = sqlite3.connect(db.db_path(settings))
        assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
        conn.close()
        assert columns(db.db_path(settings)) == fresh_columns
