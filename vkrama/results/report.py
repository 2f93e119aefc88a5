"""Bench results as rows, tables and exports (markdown, CSV, JSON).

Stage: report (results ─► rows ─► text). Pure: turns `CellResult`s and stored runs into
rows and strings; the CLI prints them. Must not run containers or open the database.
Over 300 lines because rows, the table, the verdict lines and every export format are one
shape rendered four ways.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tabulate import tabulate

from vkrama.results import serve_report
from vkrama.results.db import RunDetail, RunInfo, RunRecord
from vkrama.results.energy import Energy
from vkrama.results.ranking import (
    Change,
    llama_build,
    mixed_builds,
    model_labels,
    unranked,
    verdicts,
)
from vkrama.results.records import (
    CellResult,
    CellStatus,
    HostLoad,
    RpcWorker,
    expected_tests,
    note,
)

# The model facts a run stores (RunInfo.model), in the order exports list them.
MODEL_KEYS = ("architecture", "parameter_count", "quantization", "size")
COMPARE_HEADERS = ["backend", "driver", "device", "test", "A t/s", "B t/s", "change", "noise",
                   "verdict"]  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One cell × test: the unit of the bench table and of `--json`."""

    run_id: int | None
    backend: str
    driver: str | None
    device: str
    test: str  # carries depth and fa when they vary: "tg128 @ d4096 fa=on"
    depth: int  # llama-bench -d: tokens already in the context
    tps: float | None
    tps_stddev: float | None
    samples: list[float]
    relative: float | None  # tps / the best ok cell's tps for this test
    status: CellStatus
    reason: str
    image_id: str
    verdict: str | None = None  # the verdict line of this row's test
    busy_host: str = ""  # why the host may have slowed this cell ("" when quiet or unknown)
    host_load: HostLoad | None = None
    gpus: str = ""  # host GPU indices the cell used: "0", "0,1" for a split; "" cpu/unknown
    llama_cpp_build: str = ""  # the image's llama.cpp build ("" when it did not record one)
    cold_samples: list[float] = field(default_factory=list)  # first-use repetitions, not counted
    cold_counted: bool = False  # `samples` still hold a first-use (cold) repetition
    energy: Energy | None = None  # the test's draw (bench.energy); None: not measured
    output: str = ""  # the stack's output check before the bench: ok, drift, wrong; "" none
    rpc: tuple[RpcWorker, ...] = ()  # bench --rpc: a split row's workers (address, stack, device)


def rows(run_id: int | None, cells: Sequence[CellResult], tests: Sequence[str] = ()) -> list[Row]:
    """Rows for every cell and test; a failed cell gets one row per expected test."""
    found: list[Row] = []
    for cell in cells:
        base = Row(
            run_id=run_id,
            backend=cell.backend,
            driver=cell.driver,
            device=cell.device,
            test="-",
            depth=0,
            tps=None,
            tps_stddev=None,
            samples=[],
            relative=None,
            status=cell.status,
            reason=cell.reason,
            image_id=cell.image_id,
            busy_host=cell.busy_host,
            host_load=cell.host_load,
            gpus=",".join(str(i) for i in cell.gpus),
            llama_cpp_build=llama_build(cell),
            output=cell.output.verdict if cell.output is not None else "",
            verdict=unranked(cell) or None,
            rpc=cell.rpc,
        )
        if cell.ok:
            found += [
                replace(
                    base,
                    test=m.test,
                    depth=m.n_depth,
                    tps=m.tps,
                    tps_stddev=m.tps_stddev,
                    samples=list(m.samples),
                    cold_samples=list(m.cold_samples),
                    cold_counted=m.cold_counted,
                    energy=m.energy,
                )
                for m in cell.measurements
            ]
        else:
            found += [replace(base, test=test, depth=_depth(test)) for test in tests or ["-"]]
    best: dict[str, float] = {}
    for row in found:
        if row.tps is not None:
            best[row.test] = max(best.get(row.test, 0.0), row.tps)
    lines = {v.test: v.line for v in verdicts(cells)}
    return [
        replace(row, relative=_relative(row, best), verdict=row.verdict or lines.get(row.test))
        for row in found
    ]


def _depth(test: str) -> int:
    """The depth in a test name ("tg128 @ d4096 fa=on" -> 4096), 0 without one."""
    found = re.search(r" @ d(\d+)", test)
    return int(found[1]) if found else 0


def verdict_lines(cells: Sequence[CellResult]) -> list[str]:
    """After every bench: one line per test, the fastest cell and its ratio over the next;
    then one per cell kept out for wrong output."""
    return [v.line for v in verdicts(cells)] + [u for c in cells if (u := unranked(c))]


def _relative(row: Row, best: dict[str, float]) -> float | None:
    top = best.get(row.test)
    return round(row.tps / top, 4) if row.tps is not None and top else None


def _tps(value: float | None, stddev: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ± {stddev or 0:.2f}"


def bench_table(found: Sequence[Row], tablefmt: str = "simple") -> str:
    """The table a person reads at a glance, with failure reasons listed under it.

    A run over several GPU sets (`--gpu each`) gets a `gpus` column: which GPUs a row used."""
    sets = {r.gpus for r in found if r.gpus}
    with_gpus = len(sets) > 1 or any("," in s for s in sets)
    # Cells of different llama.cpp builds (the rocm image compiled from source) get a
    # column and a warning: a fair comparison is one build with different GPU stacks.
    builds = mixed_builds([(_cell(r), r.llama_cpp_build) for r in found])
    power = any(r.energy is not None for r in found)
    checked = any(r.output for r in found)  # the output check's verdict, when one ran
    table = tabulate(
        [
            [
                r.backend,
                r.driver or "-",
                *([r.gpus or "-"] if with_gpus else []),
                *([r.llama_cpp_build or "-"] if builds else []),
                r.device,
                r.test,
                _tps(r.tps, r.tps_stddev),
                _samples(r),
                f"{r.relative:.2f}x" if r.relative is not None else "-",
                *(energy_cells(r.energy) if power else []),
                r.status,
                *([r.output or "-"] if checked else []),
            ]
            for r in found
        ],
        headers=[
            "backend",
            "driver",
            *(["gpus"] if with_gpus else []),
            *(["llama.cpp"] if builds else []),
            *["device", "test", "t/s", "samples", "relative"],
            *(["W", "J/token"] if power else []),
            "status",
            *(["output"] if checked else []),
        ],
        tablefmt=tablefmt,
        disable_numparse=True,
    )
    reasons = dict.fromkeys(f"{_cell(r)}: {note(r.status, r.reason)}" for r in found if r.reason)
    said = dict.fromkeys(r.verdict for r in found if r.verdict)
    warnings = [*busy_warnings(found), *cold_warnings(found), *([builds] if builds else [])]
    energy = energy_notes(found) if power else []
    return "\n".join([table, *reasons, *energy, *warnings, *(["", *said] if said else [])])


def energy_cells(energy: Energy | None) -> list[str]:
    """The W and J/token columns: figures, or "-" with the why said under the table."""
    if energy is None:
        return ["-", "-"]
    watts = f"{energy.watts:.1f}" if energy.watts is not None else "-"
    joules = f"{energy.joules_per_token:.3g}" if energy.joules_per_token is not None else "-"
    return [watts, joules]


def energy_notes(found: Sequence[Row]) -> list[str]:
    """Under the table: what W and J/token are, then why a row has none (once per cell)."""
    idle = {
        _cell(r): f"{r.energy.idle_watts:.1f} W"
        for r in found
        if r.energy is not None and r.energy.idle_watts is not None
    }
    said = []
    if idle:
        said.append(
            "energy: W is the mean draw over each test's counted repetitions, read from the "
            "device's own counter; J/token is the energy above the idle draw measured just "
            f"before the cell ({', '.join(f'{k} {v}' for k, v in idle.items())})"
        )
    notes = dict.fromkeys(_energy_note(r) for r in found if r.energy is not None and r.energy.note)
    return [*said, *notes]


def _energy_note(row: Row) -> str:
    assert row.energy is not None
    if row.energy.note.startswith("no power counter"):
        return f"{_cell(row)}: {row.energy.note}"  # the same for every test of the cell
    return f"{_cell(row)} {row.test}: {row.energy.note}"


COLD_NOTE = (
    "its samples include the cold first repetition (the stack compiles on first use); "
    "ask for 2 or more repetitions"
)


def _samples(row: Row) -> str:
    """The samples column: how many were counted, "(cold)" when a first-use one is among
    them (llama-bench ran too few repetitions for the cold one to be dropped)."""
    if not row.samples:
        return "-"
    return f"{len(row.samples)} (cold)" if row.cold_counted else str(len(row.samples))


def cold_warnings(found: Sequence[Row]) -> list[str]:
    """One line per cell whose counted samples include a cold first repetition."""
    return list(dict.fromkeys(f"warning: {_cell(r)}: {COLD_NOTE}" for r in found if r.cold_counted))


def busy_warnings(found: Sequence[Row]) -> list[str]:
    """One line per cell measured on a busy host: its numbers may be low."""
    return list(
        dict.fromkeys(
            f"warning: {_cell(r)} ran on a busy host ({r.busy_host}): its numbers may be low"
            for r in found
            if r.busy_host
        )
    )


def _cell(row: Row) -> str:
    return f"{row.backend}/{row.driver}" if row.driver else row.backend


def runs_table(records: Sequence[RunRecord]) -> str:
    return tabulate(
        [
            [
                r.id,
                r.info.started,
                r.status,
                r.info.host,
                r.info.model_name,
                r.info.gpu_key,
                f"{r.ok_count}/{r.cell_count}",
                _params(r.info.params),
            ]
            for r in records
        ],
        headers=["run", "started", "status", "host", "model", "gpu", "cells ok", "params"],
        disable_numparse=True,
    )


def _params(params: dict[str, object]) -> str:
    if params.get("mode") == "serve":
        levels = params.get("concurrency")
        shown = ",".join(str(c) for c in levels) if isinstance(levels, list) else "?"
        return f"serve c{shown} p{params.get('prompt_tokens')} n{params.get('gen_tokens')}"
    text = f"p{params.get('n_prompt')} n{params.get('n_gen')} r{params.get('repetitions')}"
    depth = params.get("depth")
    if isinstance(depth, list) and depth:
        text += " d" + ",".join(str(d) for d in depth)
    fa = params.get("flash_attn")
    if isinstance(fa, list) and fa:
        text += " fa" + ",".join(str(v) for v in fa)
    return text + f" t{params['threads']}" if params.get("threads") else text


def size_text(size: int) -> str:
    """Bytes the way llama-bench prints a model's size ("8.38 MiB", "3.56 GiB")."""
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.2f} MiB"


def params_text(count: int) -> str:
    """A parameter count the way llama-bench prints it ("4.21 M", "6.74 B")."""
    return f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e6:.2f} M"


def model_facts(info: RunInfo) -> str:
    """ "tiny: llama, 4.21 M params, F16, 8.38 MiB", or the name alone for an old run."""
    m = info.model
    if not m:
        return f"{info.model_name} (no header facts: stored by an older vkrama)"
    facts = [
        str(m.get("architecture") or "?"),
        f"{params_text(int(m.get('parameter_count') or 0))} params",
        str(m.get("quantization") or "?"),
        size_text(int(m.get("size") or 0)),
    ]
    return f"{m.get('name') or info.model_name}: {', '.join(facts)}"


def run_header(detail: RunDetail) -> list[str]:
    info = detail.run.info
    gpus = ", ".join(f"{g.get('name')} [{g.get('ids')}]" for g in info.gpus) or "none"
    return [
        f"run {detail.run.id}  {info.started}  {detail.run.status}",
        f"model  {model_facts(info)}  sha256 {info.model_sha256}",
        f"host   {info.host}  kernel {info.kernel}  GPUs {gpus}",
        f"params {_params(info.params)}  vkrama {info.vkrama_version}",
    ]


def stack(provenance: dict[str, str]) -> str:
    """The image's GPU stack in a few words ("Mesa 26.2.6-1", "CUDA 12.4 …")."""
    from vkrama.images.provenance import stack_version

    return stack_version(provenance)


def provenance_table(detail: RunDetail) -> str:
    return tabulate(
        [
            [
                c.backend,
                c.driver or "-",
                c.image or "-",
                (c.image_id or "-")[:12],
                c.provenance.get("llama_cpp_build", "-"),
                c.provenance.get("ggml_version", "-"),
                stack(c.provenance),
            ]
            for c in detail.cells
        ],
        headers=["backend", "driver", "image", "image id", "llama.cpp build", "ggml", "stack"],
        disable_numparse=True,
    )


def compare_table(changes: Sequence[Change]) -> str:
    return tabulate(
        [
            [
                c.backend,
                c.driver or "-",
                c.device,
                c.test,
                _tps(c.tps_a, c.stddev_a),
                _tps(c.tps_b, c.stddev_b),
                f"{c.change_pct:+.1f}%" if c.change_pct is not None else "-",
                f"±{c.noise_pct:.1f}%" if c.noise_pct is not None else "-",
                c.verdict,
            ]
            for c in changes
        ],
        headers=[
            "backend",
            "driver",
            "device",
            "test",
            "A t/s",
            "B t/s",
            "change",
            "noise",
            "verdict",
        ],
        disable_numparse=True,
    )


def outcome_rows(
    run_id: int | None, cells: Sequence[CellResult], tests: Sequence[str], serving: bool
) -> list[Row] | list[serve_report.ServeRow]:
    """A finished bench's rows: per cell and test, or per cell and level when serving."""
    return serve_report.serve_rows(run_id, cells) if serving else rows(run_id, cells, tests)


def table(found: Sequence[Row] | Sequence[serve_report.ServeRow]) -> str:
    """The table for rows of either kind."""
    served = [row for row in found if isinstance(row, serve_report.ServeRow)]
    if served:
        return serve_report.serve_table(served)
    return bench_table([row for row in found if isinstance(row, Row)])


def run_table(detail: RunDetail) -> str:
    """A stored run's table: serving levels for `bench --serve` runs, else llama-bench's."""
    if serve_report.is_serve_run(detail):
        return serve_report.serve_table(serve_report.serve_rows(detail.run.id, detail.cells))
    return bench_table(rows_of(detail))


def export_document(details: Sequence[RunDetail]) -> list[dict[str, Any]]:
    """Runs as `results export --format json` and `results show --json` give them (the
    CLI encodes it, cli.console.to_json); `results import` reads it back."""
    return [
        {
            "run": {"id": d.run.id, "status": d.run.status, **vars(d.run.info)},
            "rows": rows_of(d),
            "verdicts": verdicts(d.cells),
            "unranked": [line for c in d.cells if (line := unranked(c))],
            "serving": serve_report.serve_rows(d.run.id, d.cells)
            if serve_report.is_serve_run(d)
            else [],
            "provenance": [
                {"backend": c.backend, "driver": c.driver, "image_id": c.image_id, **c.provenance}
                for c in d.cells
            ],
        }
        for d in details
    ]


def export(details: Sequence[RunDetail], fmt: str) -> str:
    """Runs as a markdown table (for a blog post) or CSV (JSON: `export_document`); serving
    runs get the serving columns (a markdown export of both kinds shows two tables)."""
    serve = [d for d in details if serve_report.is_serve_run(d)]
    bench = [d for d in details if not serve_report.is_serve_run(d)]
    if serve:
        if fmt == "csv" and bench:
            raise ValueError("serving and llama-bench runs have different columns")
        parts = [serve_report.export(serve, fmt)]
        if bench:
            parts.append(_export_bench(bench, fmt))
        return "\n\n".join(parts)
    return _export_bench(details, fmt)


def _export_bench(details: Sequence[RunDetail], fmt: str) -> str:
    headers = ["run", "model", "backend", "driver", "device", "test", "depth", "t/s", "±",
               "relative", "status", "llama.cpp", "stack"]  # fmt: skip
    csv_model = ["architecture", "parameters", "quantization", "model bytes"]
    table = []
    failures: dict[str, str] = {}  # one note per failed cell, in table order
    busy: dict[str, str] = {}  # one warning per cell measured on a busy host
    cold: dict[str, str] = {}  # one warning per cell that counted a cold repetition
    for d in details:
        provenance = {(c.backend, c.driver): c.provenance for c in d.cells}
        for r in rows_of(d):
            p = provenance.get((r.backend, r.driver), {})
            table.append([
                d.run.id, d.run.info.model_name, r.backend, r.driver or "", r.device, r.test,
                r.depth, "" if r.tps is None else f"{r.tps:.2f}",
                "" if r.tps_stddev is None else f"{r.tps_stddev:.2f}",
                "" if r.relative is None else f"{r.relative:.2f}",
                r.status, p.get("llama_cpp_build", ""), stack(p) if p else "",
                *(d.run.info.model.get(k, "") for k in MODEL_KEYS), r.reason, r.busy_host,
                "yes" if r.cold_counted else "", *_energy_fields(r.energy), r.output,
            ])  # fmt: skip
            if r.reason:
                failures.setdefault(f"run {d.run.id}, {_cell(r)}", f"{r.status}: {r.reason}")
            if r.cold_counted:
                cold.setdefault(f"run {d.run.id}, {_cell(r)}", COLD_NOTE)
            if r.busy_host:
                busy.setdefault(
                    f"run {d.run.id}, {_cell(r)}",
                    f"ran on a busy host ({r.busy_host}): its numbers may be low",
                )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        names = ("t/s stddev" if h == "±" else h for h in headers)
        energy = ["watts", "idle watts", "J/token", "energy note"]
        writer.writerow(
            [*names, *csv_model, "reason", "busy host", "cold counted", *energy, "output"]
        )
        writer.writerows(table)
        return out.getvalue()
    # Reasons are long: the table keeps its width, each failed or disturbed cell gets a
    # line below it.
    shown = [row[: len(headers)] for row in table]
    text = tabulate(shown, headers=headers, tablefmt="github", disable_numparse=True)
    # Each run's verdicts are of one model; where the runs hold several, each line says which.
    labels = model_labels(details)
    named = {d.run.id: f" ({labels[d.run.info.model_key]})" if len(labels) > 1 else ""
             for d in details}  # fmt: skip
    said = [f"- run {d.run.id}{named[d.run.id]}, {line}" for d in details
            for line in verdict_lines(d.cells)]  # fmt: skip
    if said:
        said = ["Verdicts (fastest cell per test, ratio over the next):", *said, ""]
    notes = [f"- run {d.run.id} model {model_facts(d.run.info)}" for d in details]
    notes += [f"- {where} {what}" for where, what in failures.items()]
    notes += [f"- warning: {where} {what}" for where, what in busy.items()]
    notes += [f"- warning: {where}: {what}" for where, what in cold.items()]
    return "\n".join([text, "", *said, *notes])


def _energy_fields(energy: Energy | None) -> list[str]:
    """The CSV's energy columns: figures, or why none ("" where nothing was measured)."""
    if energy is None:
        return ["", "", "", ""]
    figures = (energy.watts, energy.idle_watts, energy.joules_per_token)
    return [*("" if f is None else f"{f:.4g}" for f in figures), energy.note]


def rows_of(detail: RunDetail) -> list[Row]:
    """A stored run's rows; failed cells get the tests its parameters asked for."""
    params = detail.run.info.params
    asked = expected_tests(
        int(params.get("n_prompt") or 0),
        int(params.get("n_gen") or 0),
        tuple(params.get("flash_attn") or ()),
        tuple(int(d) for d in params.get("depth") or ()),  # absent before depth existed
    )
    return rows(detail.run.id, detail.cells, asked)
