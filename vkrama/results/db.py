"""The results database: bench runs and their cells in one SQLite file under VKRAMA_HOME.

Stage: parse llama-bench JSON ─► results DB. Stores what a reader needs to trust a number
later (host, kernel, GPUs, model sha256, parameters, image id and provenance, every sample,
the raw llama-bench JSON). Must not print or talk to podman. The schema is versioned with
SQLite's `user_version`; a newer file than this vkrama knows is refused, never rewritten,
and an older one is migrated in place by adding columns (its rows stay readable).
Over 300 lines because the schema, its migrations, its writes and its reads change together.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError, disk_errors
from vkrama.results import owner as owners
from vkrama.results.energy import Energy
from vkrama.results.levels import LevelStats
from vkrama.results.owner import RunOwner
from vkrama.results.records import (
    CellResult,
    CellStatus,
    HostLoad,
    Measurement,
    OutputCheck,
    RpcWorker,
    RunStatus,
)

SCHEMA_VERSION = 14
DB_NAME = "results.sqlite3"
BUSY_TIMEOUT_S = 30.0  # another process's migration or write, on a loaded box
SQLITE_DISK = (13, 8, 14)  # SQLITE_FULL, SQLITE_READONLY, SQLITE_CANTOPEN (primary codes)

_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,            -- running | ok | failed | interrupted | abandoned
    host TEXT NOT NULL,
    kernel TEXT NOT NULL,
    gpus TEXT NOT NULL,              -- JSON list of {index, ids, name, driver}
    gpu_key TEXT NOT NULL,           -- what `best` matches on
    model_name TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    params TEXT NOT NULL,            -- JSON of BenchParams
    vkrama_version TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '{}' -- JSON of the model's header facts (schema 2)
);
CREATE TABLE cells (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    backend TEXT NOT NULL,
    driver TEXT,
    device TEXT NOT NULL,
    status TEXT NOT NULL,            -- ok | failed | interrupted | unavailable (schema 7)
    reason TEXT NOT NULL,
    image TEXT NOT NULL,
    image_id TEXT NOT NULL,
    provenance TEXT NOT NULL,        -- JSON of the image's provenance labels
    command TEXT NOT NULL,           -- JSON argv of llama-bench
    raw_json TEXT,                   -- llama-bench's own JSON, verbatim
    stderr_tail TEXT NOT NULL,
    duration_s REAL NOT NULL
);
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE,
    test TEXT NOT NULL,
    n_prompt INTEGER NOT NULL,
    n_gen INTEGER NOT NULL,
    tps REAL NOT NULL,
    tps_stddev REAL NOT NULL,
    samples TEXT NOT NULL,           -- JSON list of tokens/s, one per repetition
    backends TEXT NOT NULL,
    gpu_info TEXT NOT NULL,
    n_depth INTEGER NOT NULL DEFAULT 0  -- llama-bench -d (schema 3)
);
CREATE INDEX runs_by_model ON runs (model_sha256, gpu_key);
CREATE INDEX cells_by_run ON cells (run_id);
"""
# Each step takes a database from the version before it; columns are appended last so
# that `runs.*` has the same column order in a created and in a migrated file, and an old
# row reads back with their defaults (no owner: never judged dead; no host load: not
# recorded). Old measurements keep their meaning at step 3: before depth existed,
# everything ran at depth 0.
_MIGRATIONS = {
    2: "ALTER TABLE runs ADD COLUMN model TEXT NOT NULL DEFAULT '{}';",
    3: "ALTER TABLE measurements ADD COLUMN n_depth INTEGER NOT NULL DEFAULT 0;",
    4: """
ALTER TABLE runs ADD COLUMN token TEXT;          -- the vkrama.bench-run label of its cells
ALTER TABLE runs ADD COLUMN owner_pid INTEGER;
ALTER TABLE runs ADD COLUMN owner_start INTEGER; -- /proc/PID/stat starttime, clock ticks
ALTER TABLE runs ADD COLUMN owner_boot TEXT;     -- /proc/sys/kernel/random/boot_id
ALTER TABLE cells ADD COLUMN host_load TEXT;     -- JSON of results.records.HostLoad
""",
    # Before splits, a cell's GPU set was not recorded: '' reads back as "not known".
    5: "ALTER TABLE cells ADD COLUMN gpus TEXT NOT NULL DEFAULT '';",
    # A serving bench's levels: each level's summary as JSON (results.levels.LevelStats),
    # one row per concurrency level, so new figures need no new columns.
    6: """
CREATE TABLE serve_levels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE,
    concurrency INTEGER NOT NULL,
    stats TEXT NOT NULL
);
CREATE INDEX serve_levels_by_cell ON serve_levels (cell_id);
""",
    # A cell the host could not run was `failed` with an "unavailable: " reason; it is now
    # a status of its own (records.CellStatus.UNAVAILABLE), its reason the bare why.
    # records.read_status reads exports of older vkramas the same way.
    7: """
UPDATE cells SET status = 'unavailable', reason = substr(reason, 14)
 WHERE status = 'failed' AND substr(reason, 1, 13) = 'unavailable: ';
""",
    # Each row's llama-bench settings (ub, b, fa, ctk, ctv, t, ngl, ...) as JSON: what
    # `vkrama tune` compares. Older rows read back as {} (their settings were not kept).
    8: "ALTER TABLE measurements ADD COLUMN flags TEXT NOT NULL DEFAULT '{}';",
    # First repetitions run while the stack compiled on first use, not counted in tps
    # (JSON list), and whether the counted samples still hold one. Older rows counted
    # every repetition and did not know: [] and 0.
    9: """
ALTER TABLE measurements ADD COLUMN cold_samples TEXT NOT NULL DEFAULT '[]';
ALTER TABLE measurements ADD COLUMN cold_counted INTEGER NOT NULL DEFAULT 0;
""",
    # `vkrama tune`'s outcome per stack (results.tunings.TunedStack); its trials are the
    # cells of run_id. One row per finished search: an interrupted one writes none.
    10: """
CREATE TABLE tuned (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    created TEXT NOT NULL,
    gpu_key TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    backend TEXT NOT NULL,
    driver TEXT,
    device TEXT NOT NULL,
    driver_version TEXT NOT NULL,    -- what the image's provenance says (Mesa, CUDA, ...)
    image_id TEXT NOT NULL,
    objective TEXT NOT NULL,         -- pp | tg | both
    test TEXT NOT NULL,              -- what was measured, e.g. "pp2048", "pp2048+tg128 @ d4096"
    record TEXT NOT NULL             -- JSON of the rest: flags, defaults, scores, trials, time
);
CREATE INDEX tuned_by_model ON tuned (model_sha256, gpu_key);
""",
    # bench --tuned: the tuned flags a cell ran with (records.CellResult.tuned); '' in
    # plain runs, older ones included.
    11: "ALTER TABLE cells ADD COLUMN tuned TEXT NOT NULL DEFAULT '';",
    # Each test's energy (records.Energy as JSON: W, idle W, J/token, or why none); NULL
    # where nothing was measured, older rows included.
    12: "ALTER TABLE measurements ADD COLUMN energy TEXT;",
    # The output check per stack (results.checks.OutputCheck): its divergence from the CPU
    # reference; run_id is the bench run it was made for (NULL: `vkrama check` alone).
    13: """
CREATE TABLE checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    created TEXT NOT NULL,
    gpu_key TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    backend TEXT NOT NULL,
    driver TEXT NOT NULL,            -- '' for none
    image_id TEXT NOT NULL,
    server_args TEXT NOT NULL,       -- JSON list: llama-server arguments beyond serve's
    verdict TEXT NOT NULL,           -- ok | drift | wrong
    record TEXT NOT NULL             -- JSON of the rest: KL mean/p99, top-1, reason, cost
);
CREATE INDEX checks_by_model ON checks (model_sha256, gpu_key);
ALTER TABLE cells ADD COLUMN output TEXT;  -- JSON of the OutputCheck its stack had; NULL none
""",
    # bench --rpc: a split cell's workers (records.RpcWorker as a JSON list: address,
    # backend, driver, device); '[]' for a local cell, older ones included.
    14: "ALTER TABLE cells ADD COLUMN rpc TEXT NOT NULL DEFAULT '[]';",
}


@dataclass(frozen=True)
class RunInfo:
    """What is known about a run before its first cell runs."""

    host: str
    kernel: str
    gpus: list[dict[str, Any]]
    gpu_key: str
    model_name: str
    model_sha256: str
    params: dict[str, Any]
    vkrama_version: str
    started: str = field(default_factory=lambda: now())
    # The model's header facts: name, architecture, parameter_count, quantization, size
    # (bytes). Empty for runs stored before schema 2.
    model: dict[str, Any] = field(default_factory=dict)
    token: str = ""  # the vkrama.bench-run label its containers carry
    owner: RunOwner | None = None  # the process running it

    @property
    def model_key(self) -> str:
        """What makes two runs runs of one model: the file's sha256 (its name for a run that
        stored none). Charts, verdicts and comparisons never put two keys side by side."""
        return self.model_sha256 or self.model_name

    @property
    def model_label(self) -> str:
        """The model as a chart or a row names it: "llama-3.1-8b-shape Q4_K_M"."""
        name = str(self.model.get("name") or self.model_name)
        quantization = str(self.model.get("quantization") or "")
        if not quantization or quantization.lower() in name.lower():
            return name
        return f"{name} {quantization}"


@dataclass(frozen=True)
class RunRecord:
    id: int
    info: RunInfo
    finished: str | None
    status: RunStatus
    cell_count: int = 0
    ok_count: int = 0


@dataclass(frozen=True)
class RunDetail:
    run: RunRecord
    cells: list[CellResult]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def db_path(settings: Settings) -> Path:
    return settings.home / DB_NAME


@contextlib.contextmanager
def connect(settings: Settings, create: bool = True) -> Iterator[sqlite3.Connection]:
    """An open, migrated database; committed on success, rolled back on any error."""
    path = db_path(settings)
    if not create and not path.exists():
        raise VkramaError(
            "no bench results stored yet",
            hint="run `vkrama bench MODEL` first",
            status=ExitStatus.NOT_FOUND,
        )
    with disk_errors("storing bench results", path):
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Writers take the lock when their transaction begins (IMMEDIATE), waiting up to
        # BUSY_TIMEOUT_S for another process's; a deferred one could be refused at once.
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level="IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise _disk_error(exc, path) from None
    try:
        db.execute("PRAGMA foreign_keys = ON")
        _migrate(db, path)
        with db:
            yield db
    except sqlite3.OperationalError as exc:
        # sqlite rolled the transaction back: nothing is half-stored.
        raise _disk_error(exc, path) from None
    finally:
        db.close()


def _disk_error(exc: sqlite3.OperationalError, path: Path) -> Exception:
    """A read-only home or a full disk as a DISK error (the user's to fix); else `exc`."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code not in SQLITE_DISK:
        return exc
    why = "no space left" if code == SQLITE_DISK[0] else "it is not writable"
    return VkramaError(
        f"storing bench results: cannot write {path} ({why})",
        hint="make VKRAMA_HOME writable (and give it space), or point it elsewhere;"
        " --no-save runs without storing",
        status=ExitStatus.DISK,
    )


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION; safe when several processes open it at once.

    One process migrates: it takes the write lock (BEGIN IMMEDIATE) before it reads the
    version, so another one waits (the busy timeout) and then reads the version it left.
    Reading the version and then writing, unlocked, let two processes on a new home both
    run CREATE TABLE (issue 32: `table runs already exists`).
    """
    if _version(db, path) == SCHEMA_VERSION:
        return
    # executescript() commits any open transaction before it runs, which would drop the
    # lock between reading the version and writing: each statement goes through execute().
    level = db.isolation_level
    db.isolation_level = None  # our BEGIN/COMMIT, no implicit ones
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = _version(db, path)
            steps = []
            if version == 0:
                steps.append(_SCHEMA)
                version = 3  # _SCHEMA is schema 3; later steps are migrations
            steps += [_MIGRATIONS[step] for step in range(version + 1, SCHEMA_VERSION + 1)]
            for statement in (s for script in steps for s in _statements(script)):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            if db.in_transaction:  # sqlite may have rolled back itself (a full disk)
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.isolation_level = level


def _version(db: sqlite3.Connection, path: Path) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise VkramaError(
            f"{path} has results schema {version}; this vkrama knows up to {SCHEMA_VERSION}",
            hint="upgrade vkrama, or point VKRAMA_HOME elsewhere",
            status=ExitStatus.CONFIG,
        )
    return version


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of `script`, one at a time (a trailing comment is dropped)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""


def start_run(settings: Settings, info: RunInfo) -> int:
    """Record a run before its cells run, so that finished cells survive a Ctrl-C."""
    owner = info.owner
    with connect(settings) as db:
        cursor = db.execute(
            "INSERT INTO runs (started, status, host, kernel, gpus, gpu_key, model_name,"
            " model_sha256, params, vkrama_version, model, token, owner_pid, owner_start,"
            " owner_boot) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                info.started,
                RunStatus.RUNNING.value,
                info.host,
                info.kernel,
                json.dumps(info.gpus),
                info.gpu_key,
                info.model_name,
                info.model_sha256,
                json.dumps(info.params),
                info.vkrama_version,
                json.dumps(info.model),
                info.token,
                owner.pid if owner else None,
                owner.start_ticks if owner else None,
                owner.boot_id if owner else None,
            ),
        )
        return int(cursor.lastrowid or 0)


def abandon_dead_runs(
    settings: Settings,
    host: str | None = None,
    is_dead: Callable[[RunOwner], bool] = owners.is_dead,
) -> list[RunRecord]:
    """Mark `abandoned` every run still `running` whose vkrama process on this host is gone.

    A run of another host (a shared VKRAMA_HOME) or without an owner is never judged.
    """
    if not db_path(settings).exists():
        return []
    here = host or socket.gethostname()
    with connect(settings) as db:
        rows = db.execute(
            "SELECT id, owner_pid, owner_start, owner_boot FROM runs"
            " WHERE status = ? AND host = ? AND owner_pid IS NOT NULL",
            (RunStatus.RUNNING.value, here),
        ).fetchall()
        dead = [
            run_id
            for run_id, pid, start, boot in rows
            if is_dead(RunOwner(int(pid), int(start or 0), boot or ""))
        ]
        for run_id in dead:
            db.execute(
                "UPDATE runs SET status = ?, finished = ? WHERE id = ? AND status = ?",
                (RunStatus.ABANDONED.value, now(), run_id, RunStatus.RUNNING.value),
            )
    return [get_run(settings, run_id).run for run_id in dead]


def abandoned_tokens(settings: Settings) -> set[str]:
    """The container labels of abandoned runs: what a sweep may remove."""
    if not db_path(settings).exists():
        return set()
    with connect(settings) as db:
        rows = db.execute(
            "SELECT token FROM runs WHERE status = ? AND token IS NOT NULL AND token != ''",
            (RunStatus.ABANDONED.value,),
        ).fetchall()
    return {token for (token,) in rows}


def add_cell(settings: Settings, run_id: int, position: int, cell: CellResult) -> None:
    with connect(settings) as db:
        cursor = db.execute(
            "INSERT INTO cells (run_id, position, backend, driver, device, status, reason,"
            " image, image_id, provenance, command, raw_json, stderr_tail, duration_s,"
            " host_load, gpus, tuned, output, rpc)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run_id,
                position,
                cell.backend,
                cell.driver,
                cell.device,
                cell.status.value,
                cell.reason,
                cell.image,
                cell.image_id,
                json.dumps(cell.provenance),
                json.dumps(list(cell.command)),
                None if cell.raw_json is None else json.dumps(cell.raw_json),
                cell.stderr_tail,
                cell.duration_s,
                None if cell.host_load is None else json.dumps(cell.host_load.to_dict()),
                ",".join(str(i) for i in cell.gpus),
                cell.tuned,
                None if cell.output is None else json.dumps(cell.output.to_dict()),
                json.dumps([asdict(w) for w in cell.rpc]),
            ),
        )
        for level in cell.serving:
            db.execute(
                "INSERT INTO serve_levels (cell_id, concurrency, stats) VALUES (?,?,?)",
                (cursor.lastrowid, level.concurrency, json.dumps(level.as_dict())),
            )
        for m in cell.measurements:
            db.execute(
                "INSERT INTO measurements (cell_id, test, n_prompt, n_gen, tps, tps_stddev,"
                " samples, backends, gpu_info, n_depth, flags, cold_samples, cold_counted,"
                " energy) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    cursor.lastrowid,
                    m.test,
                    m.n_prompt,
                    m.n_gen,
                    m.tps,
                    m.tps_stddev,
                    json.dumps(list(m.samples)),
                    m.backends,
                    m.gpu_info,
                    m.n_depth,
                    json.dumps(m.flags),
                    json.dumps(list(m.cold_samples)),
                    int(m.cold_counted),
                    None if m.energy is None else json.dumps(m.energy.to_dict()),
                ),
            )


def finish_run(settings: Settings, run_id: int, status: RunStatus) -> None:
    with connect(settings) as db:
        db.execute(
            "UPDATE runs SET finished = ?, status = ? WHERE id = ?", (now(), status.value, run_id)
        )


def discard_run(settings: Settings, run_id: int) -> None:
    """Forget a run and its cells, as if never started: a run refused once it had begun
    (a rate the load generator cannot send) stores nothing."""
    with connect(settings) as db:
        db.execute("DELETE FROM runs WHERE id = ?", (run_id,))  # cells and rows cascade


def list_runs(settings: Settings) -> list[RunRecord]:
    """Every stored run, newest first."""
    if not db_path(settings).exists():
        return []
    with connect(settings) as db:
        rows = db.execute(
            "SELECT runs.*, COUNT(cells.id), SUM(cells.status = 'ok') FROM runs"
            " LEFT JOIN cells ON cells.run_id = runs.id GROUP BY runs.id ORDER BY runs.id DESC"
        ).fetchall()
    return [_run_record(row) for row in rows]


def get_run(settings: Settings, ref: str | int) -> RunDetail:
    """One run with its cells; `ref` is a run id or `latest`."""
    with connect(settings, create=False) as db:
        if str(ref) in ("latest", "last"):
            found = db.execute("SELECT MAX(id) FROM runs").fetchone()[0]
            if found is None:
                raise _not_found(ref)
            run_id = int(found)
        else:
            try:
                run_id = int(ref)
            except ValueError:
                raise _not_found(ref) from None
        row = db.execute(
            "SELECT runs.*, COUNT(cells.id), SUM(cells.status = 'ok') FROM runs"
            " LEFT JOIN cells ON cells.run_id = runs.id WHERE runs.id = ? GROUP BY runs.id",
            (run_id,),
        ).fetchone()
        if row is None:
            raise _not_found(ref)
        cells = [
            _cell(db, cell)
            for cell in db.execute(
                "SELECT * FROM cells WHERE run_id = ? ORDER BY position, id", (run_id,)
            ).fetchall()
        ]
    return RunDetail(_run_record(row), cells)


def _not_found(ref: str | int) -> VkramaError:
    return VkramaError(
        f"no bench run {ref!r}",
        hint="`vkrama results list` shows the stored runs",
        status=ExitStatus.NOT_FOUND,
    )


def _run_record(row: tuple[Any, ...]) -> RunRecord:
    (run_id, started, finished, status, host, kernel, gpus, gpu_key, model_name, sha,
     params, version, model, token, pid, start, boot, cell_count, ok_count) = row  # fmt: skip
    info = RunInfo(
        host=host,
        kernel=kernel,
        gpus=json.loads(gpus),
        gpu_key=gpu_key,
        model_name=model_name,
        model_sha256=sha,
        params=json.loads(params),
        vkrama_version=version,
        started=started,
        model=json.loads(model),
        token=token or "",
        owner=None if pid is None else RunOwner(int(pid), int(start or 0), boot or ""),
    )
    return RunRecord(
        run_id, info, finished, RunStatus(status), int(cell_count or 0), int(ok_count or 0)
    )


def _cell(db: sqlite3.Connection, row: tuple[Any, ...]) -> CellResult:
    (cell_id, _run, _position, backend, driver, device, status, reason, image, image_id,
     provenance, command, raw_json, stderr_tail, duration_s, host_load, gpus,
     tuned, output, rpc) = row  # fmt: skip
    found = db.execute(
        "SELECT test, n_prompt, n_gen, tps, tps_stddev, samples, backends, gpu_info, n_depth,"
        " flags, cold_samples, cold_counted, energy"
        " FROM measurements WHERE cell_id = ? ORDER BY id",
        (cell_id,),
    ).fetchall()
    levels = db.execute(
        "SELECT stats FROM serve_levels WHERE cell_id = ? ORDER BY id", (cell_id,)
    ).fetchall()
    return CellResult(
        serving=tuple(LevelStats.from_dict(json.loads(stats)) for (stats,) in levels),
        backend=backend,
        driver=driver,
        device=device,
        status=CellStatus(status),
        reason=reason,
        image=image,
        image_id=image_id,
        provenance=json.loads(provenance),
        measurements=tuple(
            Measurement(
                t,
                p,
                g,
                tps,
                sd,
                tuple(json.loads(s)),
                b,
                gi,
                d,
                json.loads(fl),
                tuple(json.loads(cs)),
                bool(cc),
                None if en is None else Energy.from_dict(json.loads(en)),
            )
            for t, p, g, tps, sd, s, b, gi, d, fl, cs, cc, en in found
        ),
        raw_json=None if raw_json is None else json.loads(raw_json),
        stderr_tail=stderr_tail,
        command=tuple(json.loads(command)),
        duration_s=duration_s,
        host_load=None if host_load is None else HostLoad.from_dict(json.loads(host_load)),
        gpus=tuple(int(i) for i in gpus.split(",") if i),
        tuned=tuned,
        output=None if output is None else OutputCheck.from_dict(json.loads(output)),
        rpc=tuple(RpcWorker.from_dict(w) for w in json.loads(rpc)),
    )
