"""Runs from other machines: fleet Job records and other vkramas' exports, into this store.

Stage: bench, from elsewhere (text ─► bench.run.judge ─► results DB). A fleet record is
one JSON line a `vkrama bench --generate kube` Job printed: the cell as planned, the node
it ran on, its kernel, the image's provenance and llama-bench's raw stdout/stderr. It is
judged with the same `bench.run.judge` a local bench uses (a cell whose backend did not
really run is failed, never counted) and stored as a run whose host is the node. `vkrama
results export --format json` output from another machine is accepted too. Must not print
or run containers. (In bench, not results: judging is bench's, and results never imports
bench.)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from vkrama.bench.plan import BenchCell
from vkrama.bench.run import judge
from vkrama.config import Settings
from vkrama.engine.spec import ContainerSpec
from vkrama.errors import ExitStatus, VkramaError
from vkrama.results import db
from vkrama.results.records import CellResult, Measurement, RpcWorker, RunStatus, read_status

FLEET_KEY = "vkrama_fleet"
FLEET_VERSION = 1


@dataclass(frozen=True)
class Imported:
    run_id: int
    host: str
    cells: int
    ok: int


def import_text(settings: Settings, text: str, source: str) -> list[Imported]:
    """Store every run in `text` (fleet records, one per line, or an export); the runs."""
    stripped = text.strip()
    if stripped.startswith("["):
        return [_store(settings, info, cells) for info, cells in _exported(stripped, source)]
    runs: dict[tuple[str, str], tuple[db.RunInfo, list[CellResult]]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip().startswith("{"):
            continue  # kubectl/podman may interleave their own lines
        record = _json(line, f"{source}:{number}")
        if FLEET_KEY not in record:
            continue
        try:
            info, cell = _fleet(record, f"{source}:{number}")
        except (KeyError, TypeError, ValueError) as error:
            raise _bad(f"{source}:{number}", f"not a fleet record ({error!r})") from None
        key = (str(record["cell"].get("run", "")), info.host)
        runs.setdefault(key, (info, []))[1].append(cell)
    if not runs:
        raise VkramaError(
            f"no vkrama runs in {source}",
            hint="give it the output of the fleet Jobs (`kubectl logs -l vkrama.fleet=…`) "
            "or of `vkrama results export --format json`",
            status=ExitStatus.USAGE,
        )
    return [_store(settings, info, cells) for info, cells in runs.values()]


def _store(settings: Settings, info: db.RunInfo, cells: list[CellResult]) -> Imported:
    run_id = db.start_run(settings, info)
    for position, cell in enumerate(cells):
        db.add_cell(settings, run_id, position, cell)
    ok = sum(cell.ok for cell in cells)
    status = RunStatus.OK if cells and ok == len(cells) else RunStatus.FAILED
    db.finish_run(settings, run_id, status)
    return Imported(run_id, info.host, len(cells), ok)


def _fleet(record: dict[str, Any], where: str) -> tuple[db.RunInfo, CellResult]:
    on: Callable[[str], Any] = _field(record, where)
    if on(FLEET_KEY) != FLEET_VERSION:
        raise _bad(where, f"record version {record[FLEET_KEY]!r}; this vkrama reads 1")
    cell = on("cell")
    planned = BenchCell(
        backend=cell["backend"],
        driver=cell.get("driver"),
        device=cell.get("device", "-"),
        image=cell.get("image", ""),
        spec=ContainerSpec(image=cell.get("image", ""), command=tuple(cell.get("command", ()))),
        cold_reps=int(cell.get("cold_reps") or 0),
    )
    judged = judge(
        planned,
        int(on("exit_code")),
        _b64(on("stdout_b64"), where),
        _b64(on("stderr_b64"), where),
        flash_attn_varied=bool(cell.get("flash_attn_varied")),
        duration_s=float(record.get("duration_s") or 0),
    )
    provenance = record.get("provenance") or {}
    judged = replace(judged, provenance={k: str(v) for k, v in provenance.items() if v})
    info = db.RunInfo(
        host=str(on("node")),
        kernel=str(record.get("kernel", "")),
        gpus=list(cell.get("gpus") or []),
        gpu_key=str(cell.get("gpu_key") or "none"),
        model_name=str(cell["model_name"]),
        model_sha256=str(cell["model_sha256"]),
        params=dict(cell.get("params") or {}),
        vkrama_version=str(cell.get("vkrama_version", "")),
    )
    return info, judged


def _exported(text: str, source: str) -> list[tuple[db.RunInfo, list[CellResult]]]:
    """Runs from `vkrama results export --format json` (or `results show --json`)."""
    runs = []
    for n, entry in enumerate(_json(text, source) if text else [], 1):
        where = f"{source}: run {n}"
        try:
            run = dict(entry["run"])
            required = ("host", "kernel", "gpus", "gpu_key", "model_name", "model_sha256",
                        "params", "vkrama_version", "started")  # fmt: skip
            info = db.RunInfo(**{k: run[k] for k in required}, model=run.get("model") or {})
            provenance = {(p["backend"], p.get("driver")): p for p in entry.get("provenance", [])}
            cells: dict[tuple[str, str | None, str, str], CellResult] = {}
            for row in entry["rows"]:
                gpus = row.get("gpus") or ""  # a list, a "0,1" string, or absent (older)
                if isinstance(gpus, list):
                    gpus = ",".join(str(g) for g in gpus)
                key = (row["backend"], row.get("driver"), row["device"], str(gpus))
                p = dict(provenance.get(key[:2], {}))
                image_id = str(p.pop("image_id", row.get("image_id", "")))
                p.pop("backend", None)
                p.pop("driver", None)
                status, reason = read_status(row["status"], row.get("reason", ""))
                cell = cells.setdefault(key, CellResult(
                    backend=key[0], driver=key[1], device=key[2], status=status, reason=reason,
                    image_id=image_id, provenance={k: str(v) for k, v in p.items()},
                    gpus=tuple(int(g) for g in key[3].split(",") if g),
                    rpc=tuple(RpcWorker.from_dict(w) for w in row.get("rpc") or ()),
                ))  # fmt: skip
                if row.get("tps") is not None:
                    n_prompt, n_gen, n_depth = _shape(row["test"], row.get("depth"))
                    measured = Measurement(row["test"], n_prompt, n_gen, row["tps"],
                                           row["tps_stddev"] or 0, tuple(row.get("samples") or ()),
                                           "", "", n_depth,
                                           cold_samples=tuple(row.get("cold_samples") or ()),
                                           cold_counted=bool(row.get("cold_counted")))  # fmt: skip
                    cells[key] = replace(cell, measurements=(*cell.measurements, measured))
        except (KeyError, TypeError, ValueError) as error:
            raise _bad(where, f"not a vkrama export ({error})") from None
        runs.append((info, list(cells.values())))
    return runs


def _shape(test: str, depth: Any) -> tuple[int, int, int]:
    """n_prompt, n_gen and depth of an exported test name: "pp512", "tg128 @ d4096 fa=on",
    "pp512+tg128" (the names results.records.test_name writes)."""
    prompt = re.search(r"\bpp(\d+)", test)
    gen = re.search(r"\btg(\d+)", test)
    at = re.search(r"@ d(\d+)", test)
    n_depth = int(depth) if isinstance(depth, int) else int(at.group(1)) if at else 0
    return (int(prompt.group(1)) if prompt else 0, int(gen.group(1)) if gen else 0, n_depth)


def _field(record: dict[str, Any], where: str) -> Callable[[str], Any]:
    def get(key: str) -> Any:
        if key not in record:
            raise _bad(where, f"the record has no {key!r}")
        return record[key]

    return get


def _b64(text: str, where: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        raise _bad(where, "its output is not base64") from None


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _bad(where, f"not JSON ({error.msg}, column {error.colno})") from None


def _bad(where: str, why: str) -> VkramaError:
    return VkramaError(
        f"{where}: {why}",
        hint="import the lines the fleet Jobs printed, unchanged",
        status=ExitStatus.USAGE,
    )
