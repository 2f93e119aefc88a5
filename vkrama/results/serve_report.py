"""A serving bench's results as rows, tables and exports (`bench --serve`).

Stage: report, for runs whose params say `mode: serve`: one row per cell and concurrency
level (TTFT, ITL, E2E percentiles, throughput). Pure: records in, strings out; must not run
containers or open the database. `report` hands serving runs here.

Over 300 lines because one row carries every figure a serving level has (latency, the rate
really sent, goodput and capacity, the prompt cache, energy), each with its table column, its line
under the table and its export column; splitting them would split one row's definition.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tabulate import tabulate

from vkrama.results.db import RunDetail
from vkrama.results.energy import Energy
from vkrama.results.levels import Capacity, Spread, capacity, judged
from vkrama.results.records import CellResult, CellStatus, note


@dataclass(frozen=True)
class ServeRow:
    """One cell × concurrency level of a serving bench: the unit of its table and `--json`."""

    run_id: int | None
    backend: str
    driver: str | None
    device: str
    concurrency: int | None
    requests: int
    failures: int
    ttft_ms: Spread | None
    itl_ms: Spread | None
    e2e_ms: Spread | None
    decode_tps: Spread | None  # per request
    output_tps: float | None  # all requests together
    requests_per_s: float | None
    relative: float | None  # output_tps / the best ok cell's at this concurrency
    client_cpu_s: float | None
    server_cpu_s: float | None
    status: CellStatus
    reason: str
    image_id: str
    load: str = "-"  # "4 clients", "2/s poisson", "burst"
    rate: float | None = None  # open loop: requests/s asked (None: closed loop or a burst)
    arrival: str | None = None
    realized_rate: float | None = None  # open loop: requests/s really sent
    send_lag_ms: Spread | None = None  # open loop: how late the generator sent each
    sent_late: bool = False  # it fell behind beyond bench.arrivals' bounds
    slo_met: bool | None = None  # against --slo; None without one
    slo_broken: tuple[str, ...] = ()
    prompt_cache: bool | None = None  # --prefix-tokens: the server's prompt cache on/off
    cache_hits: int = 0
    cached_tokens: int = 0
    prompt_tokens: int = 0
    ttft_hit_ms: Spread | None = None
    ttft_miss_ms: Spread | None = None
    # Against --slo: the level's goodput (requests/s each within every target) and how many
    # requests made it; the cell's capacity (highest rate whose level met it, every row of
    # the cell), a lower bound when `capacity_at_least`.
    goodput: float | None = None
    good_requests: int | None = None
    capacity: float | None = None
    capacity_at_least: bool = False
    energy: Energy | None = None  # the level's draw; J/token per output token
    joules_per_request: float | None = None  # above idle, per answered request


def serve_rows(run_id: int | None, cells: Sequence[CellResult]) -> list[ServeRow]:
    """Rows for every serving cell and level; a cell that measured nothing gets one row."""
    found: list[ServeRow] = []
    for cell in cells:
        most = capacity(judged(cell.serving))
        base = ServeRow(run_id, cell.backend, cell.driver, cell.device, None, 0, 0, None, None,
                        None, None, None, None, None, None, None, cell.status, cell.reason,
                        cell.image_id, capacity=None if most is None else most.rate,
                        capacity_at_least=bool(most and most.at_least))  # fmt: skip
        found += [
            replace(
                base,
                concurrency=s.concurrency,
                requests=s.requests,
                failures=s.failures,
                ttft_ms=s.ttft_ms,
                itl_ms=s.itl_ms,
                e2e_ms=s.e2e_ms,
                decode_tps=s.decode_tps,
                output_tps=s.output_tps,
                requests_per_s=s.requests_per_s,
                client_cpu_s=s.client_cpu_s,
                server_cpu_s=s.server_cpu_s,
                load=s.load,
                rate=s.rate,
                arrival=s.arrival,
                realized_rate=s.realized_rate,
                send_lag_ms=s.send_lag_ms,
                sent_late=s.sent_late,
                slo_met=s.slo_met,
                slo_broken=s.slo_broken,
                goodput=s.goodput,
                good_requests=s.good_requests,
                prompt_cache=s.prompt_cache,
                cache_hits=s.cache_hits,
                cached_tokens=s.cached_tokens,
                prompt_tokens=s.prompt_tokens,
                ttft_hit_ms=s.ttft_hit_ms,
                ttft_miss_ms=s.ttft_miss_ms,
                energy=s.energy,
                joules_per_request=s.joules_per_request,
            )
            for s in cell.serving
        ] or [base]
    best: dict[str, float] = {}
    for row in found:
        if row.status == CellStatus.OK and row.output_tps:
            best[row.load] = max(best.get(row.load, 0.0), row.output_tps)
    return [
        replace(row, relative=round(row.output_tps / best[row.load], 4))
        if row.status == CellStatus.OK and row.output_tps and best.get(row.load)
        else row
        for row in found
    ]


SERVE_HEADERS = ["backend", "driver", "device", "load", "answered", "TTFT ms p50/p90/p99",
                 "ITL ms p50/p90/p99", "E2E ms p50/p99", "tok/s/req", "tok/s total", "req/s",
                 "relative", "status"]  # fmt: skip


def _spread(value: Spread | None, digits: int = 0, p90: bool = True) -> str:
    if value is None:
        return "-"
    shown = (value.p50, value.p90, value.p99) if p90 else (value.p50, value.p99)
    return "/".join(f"{v:.{digits}f}" for v in shown)


def _sent(r: ServeRow) -> str:
    if r.realized_rate is None:
        return "-"
    return f"{r.realized_rate:.3g}" + (" late" if r.sent_late else "")


def _serve_cells(r: ServeRow, paced: bool = False) -> list[object]:
    return [
        r.backend,
        r.driver or "-",
        r.device,
        (r.concurrency or "-") if r.arrival is None and r.prompt_cache is None else r.load,
        *([_sent(r)] if paced else []),
        f"{r.requests - r.failures}/{r.requests}" if r.requests else "-",
        _spread(r.ttft_ms),
        _spread(r.itl_ms, 1),
        _spread(r.e2e_ms, 0, p90=False),
        f"{r.decode_tps.p50:.1f}" if r.decode_tps else "-",
        f"{r.output_tps:.1f}" if r.output_tps is not None else "-",
        f"{r.requests_per_s:.2f}" if r.requests_per_s is not None else "-",
        f"{r.relative:.2f}x" if r.relative is not None else "-",
        r.status,
    ]


def serve_table(found: Sequence[ServeRow], tablefmt: str = "simple") -> str:
    """The serving bench's table (percentiles p50/p90/p99), failure reasons under it; with
    an SLO, each level's goodput and whether its percentiles met it, each stack's capacity."""
    judged = any(r.slo_met is not None for r in found)
    # Open-loop levels: the rate really sent beside the nominal one in `load`.
    paced = any(r.realized_rate is not None for r in found)
    headers = [*SERVE_HEADERS[:4], "sent/s", *SERVE_HEADERS[4:]] if paced else SERVE_HEADERS
    headers = [*headers, "goodput req/s", "SLO"] if judged else headers
    power = any(r.energy is not None for r in found)
    headers = [*headers, "W", "J/token", "J/req"] if power else headers
    shown = [[*_serve_cells(r, paced), *([_goodput(r), _slo(r)] if judged else []),
              *(_energy(r) if power else [])] for r in found]  # fmt: skip
    table = tabulate(shown, headers=headers, tablefmt=tablefmt, disable_numparse=True)
    reasons = dict.fromkeys(
        f"{r.backend}{f'/{r.driver}' if r.driver else ''}: {note(r.status, r.reason)}"
        for r in found
        if r.reason
    )
    # The level where the generator weighed most against the server: it must stay small
    # there for the figures to be the server's and not the generator's.
    measured = [r for r in found if r.client_cpu_s is not None and r.server_cpu_s]
    cpu = sorted(measured, key=lambda r: -(r.client_cpu_s or 0) / (r.server_cpu_s or 1))
    notes = [
        f"load generator CPU at its highest share, {r.backend}"
        f"{f'/{r.driver}' if r.driver else ''} at {r.load}: {r.client_cpu_s:.2f} s vs the "
        f"server's {r.server_cpu_s:.2f} s "
        f"({100 * (r.client_cpu_s or 0) / (r.server_cpu_s or 1):.1f} %)"
        for r in cpu[:1]
    ]
    late = [
        f"the load generator fell behind at {r.load}, {_name(r)}: sent at "
        f"{r.realized_rate or 0:.3g}/s, p99 {r.send_lag_ms.p99 if r.send_lag_ms else 0:.0f} ms "
        "late (its latencies count from the scheduled sends)"
        for r in found
        if r.sent_late
    ]
    energy = energy_lines(found) if power else []
    parts = [table, *reasons, *energy, *notes, *late, *capacity_lines(found), *cache_lines(found)]
    return "\n".join(parts)


def _energy(r: ServeRow) -> list[str]:
    e = r.energy
    if e is None:
        return ["-", "-", "-"]
    return [
        "-" if e.watts is None else f"{e.watts:.1f}",
        "-" if e.joules_per_token is None else f"{e.joules_per_token:.3g}",
        "-" if r.joules_per_request is None else f"{r.joules_per_request:.3g}",
    ]


def energy_lines(found: Sequence[ServeRow]) -> list[str]:
    """What W, J/token and J/req are, then why a level has none (once per cell and why)."""
    said = [
        "energy: W is the mean draw over each level (its warm-up not counted), read from the "
        "device's own counter; J/token (per output token) and J/req are the energy above the "
        "idle draw measured just before the server started"
    ]
    said += dict.fromkeys(
        f"{_name(r)} at {r.load}: {r.energy.note}"
        if not r.energy.note.startswith("no power counter")
        else f"{_name(r)}: {r.energy.note}"
        for r in found
        if r.energy is not None and r.energy.note
    )
    return said


def _name(r: ServeRow) -> str:
    return f"{r.backend}{f'/{r.driver}' if r.driver else ''}"


def _slo(row: ServeRow) -> str:
    if row.slo_met is None:
        return "-"
    return "met" if row.slo_met else f"broke: {'; '.join(row.slo_broken)}"


def _goodput(row: ServeRow) -> str:
    if row.goodput is None:
        return "-"
    return f"{row.goodput:.2f} ({row.good_requests}/{row.requests})"


def capacity_lines(found: Sequence[ServeRow]) -> list[str]:
    """Per stack judged against an SLO at request rates: its capacity, said as a lower
    bound when no rate tried broke the SLO."""
    stacks: dict[str, list[tuple[float, bool]]] = {}
    for r in found:
        if r.rate is not None and r.slo_met is not None and r.prompt_cache is not False:
            stacks.setdefault(_name(r), []).append((r.rate, r.slo_met))
    lines = []
    for name, pairs in stacks.items():
        best: Capacity | None = capacity(pairs)
        said = "none (every rate tried broke it)" if best is None else best.said()
        if best is not None and best.at_least:
            said += " (no rate tried broke the SLO: the server may sustain more)"
        lines.append(f"capacity within the SLO (highest rate that met it), {name}: {said}")
    return lines


def cache_lines(found: Sequence[ServeRow]) -> list[str]:
    """Per level measured with the prompt cache on: how many requests hit it, how much of
    the prompt came from it (llama-server's `timings.cache_n`), TTFT with and without."""
    lines = []
    off = {(r.backend, r.driver, r.concurrency, r.rate, r.arrival): r
           for r in found if r.prompt_cache is False}  # fmt: skip
    for r in found:
        if not r.prompt_cache or not r.requests:
            continue
        answered = r.requests - r.failures
        said = (f"prompt cache, {r.backend}{f'/{r.driver}' if r.driver else ''} at {r.load}: "
                f"{r.cache_hits} of {answered} requests hit it, {r.cached_tokens} of "
                f"{r.prompt_tokens} prompt tokens came from it")  # fmt: skip
        if r.ttft_hit_ms is not None:
            said += f"; TTFT p50 {r.ttft_hit_ms.p50:.0f} ms on a hit"
        if r.ttft_miss_ms is not None:
            said += f", {r.ttft_miss_ms.p50:.0f} ms on a miss"
        without = off.get((r.backend, r.driver, r.concurrency, r.rate, r.arrival))
        if without is not None and without.ttft_ms is not None:
            said += f", {without.ttft_ms.p50:.0f} ms with the cache off"
        lines.append(said)
    return lines


def is_serve_run(detail: RunDetail) -> bool:
    return detail.run.info.params.get("mode") == "serve"


SERVE_EXPORT_HEADERS = ["run", "model", "backend", "driver", "device", "clients", "load",
                        "requests",
                        "failures", "ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99", "itl_ms_p50",
                        "itl_ms_p90", "itl_ms_p99", "e2e_ms_p50", "e2e_ms_p90", "e2e_ms_p99",
                        "tps_per_request_p50", "tps_total", "requests_per_s", "status",
                        "llama.cpp", "stack"]  # fmt: skip


def export(details: Sequence[RunDetail], fmt: str) -> str:
    table = []
    for d in details:
        provenance = {(c.backend, c.driver): c.provenance for c in d.cells}
        for r in serve_rows(d.run.id, d.cells):
            p = provenance.get((r.backend, r.driver), {})
            spreads = [
                "" if spread is None else f"{getattr(spread, q):.{digits}f}"
                for spread, digits in ((r.ttft_ms, 1), (r.itl_ms, 2), (r.e2e_ms, 1))
                for q in ("p50", "p90", "p99")
            ]
            table.append([
                d.run.id, d.run.info.model_name, r.backend, r.driver or "", r.device,
                r.concurrency or "", r.load, r.requests, r.failures, *spreads,
                "" if r.decode_tps is None else f"{r.decode_tps.p50:.2f}",
                "" if r.output_tps is None else f"{r.output_tps:.2f}",
                "" if r.requests_per_s is None else f"{r.requests_per_s:.3f}",
                r.status, p.get("llama_cpp_build", ""), _stack(p) if p else "", r.reason,
            ])  # fmt: skip
    return _render(SERVE_EXPORT_HEADERS, table, fmt)


def _render(headers: list[str], table: Sequence[Sequence[object]], fmt: str) -> str:
    """CSV with a reason column, or a markdown table with one note per failed cell."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*headers, "reason"])
        writer.writerows(table)
        return out.getvalue()
    # Reasons are long: the table keeps its width, each failed cell gets a line below it.
    shown = [row[:-1] for row in table]
    text = tabulate(shown, headers=headers, tablefmt="github", disable_numparse=True)
    notes = dict.fromkeys(
        f"- run {row[0]}, {row[2]}{f'/{row[3]}' if row[3] else ''} {row[-4]}: {row[-1]}"
        for row in table
        if row[-1]
    )
    return "\n".join([text, "", *notes]) if notes else text


def _stack(provenance: dict[str, str]) -> str:
    from vkrama.images.provenance import stack_version

    return stack_version(provenance)
