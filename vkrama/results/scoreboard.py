"""A stored run as the table the llama.cpp scoreboards collect, ready to paste.

Stage: report (results ─► text). The Vulkan, CUDA and ROCm scoreboard threads
(ggml-org/llama.cpp discussions 10879, 15013, 15021) collect llama-bench's markdown table:
`| model | size | params | backend | ngl | fa | test | t/s |` with `build: COMMIT (NUMBER)`
under it. This module writes that shape from the llama-bench JSON each cell stored
verbatim, so the numbers and names are llama-bench's own; vkrama adds what those threads
ask for in prose above the table: the GPU, its kernel driver, each cell's image and
stack versions; and after llama-bench's columns one of its own, J/token (above the idle
draw, from the device's own counter: `bench.energy`), "-" where none, and why under it.
Pure; must not open the database or print.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from vkrama.llama_flags import FLAG
from vkrama.results.db import RunDetail
from vkrama.results.ranking import cell_name
from vkrama.results.records import CellResult, Measurement, test_name
from vkrama.results.report import model_facts, params_text, size_text, stack

HEADERS = ("model", "size", "params", "backend", "ngl", "fa", "test", "t/s", "J/token")
# llama-bench right-aligns its numbers; the pipe format marks it with colons, as it does.
ALIGN = ("left", "right", "right", "left", "right", "right", "right", "right", "right")


def scoreboard(detail: RunDetail) -> str:
    """The header lines, the llama-bench table of every ok cell, and the build line."""
    info = detail.run.info
    gpus = [
        f"{g.get('name')} [{g.get('ids')}], kernel driver {g.get('kernel_driver') or 'none'}"
        for g in info.gpus
    ]
    lines = [
        f"vkrama {info.vkrama_version}, run {detail.run.id}, {info.started}, host {info.host},"
        f" kernel {info.kernel}",
        f"model: {model_facts(info)}, sha256 {info.model_sha256}",
        f"GPU: {'; '.join(gpus) or 'none'}",
    ]
    table: list[list[str]] = []
    builds: dict[str, None] = {}
    notes: dict[str, None] = {}  # why a row has no J/token, once per cell and reason
    for cell in detail.cells:
        lines.append(f"{cell_name(cell)}: {_cell_facts(cell)}")
        for m, raw in _measured(cell):
            table.append(_row(cell, m, raw))
            builds[f"{raw.get('build_commit', '?')} ({raw.get('build_number', '?')})"] = None
            if m.energy is not None and m.energy.joules_per_token is None:
                notes[f"{cell_name(cell)} {m.test}: {m.energy.note}"] = None
    body = tabulate(table, headers=HEADERS, tablefmt="pipe", colalign=ALIGN,
                    disable_numparse=True)  # fmt: skip
    energy = [
        "J/token: the energy above the idle draw measured just before each cell, per token,"
        " from the device's own counter; - where none was measured",
        *(f"- {note}" for note in notes),
    ]
    return "\n".join([*lines, "", body, "", f"build: {', '.join(builds) or '?'}", *energy])


def _cell_facts(cell: CellResult) -> str:
    if not cell.ok:
        return f"{cell.status}: {cell.reason}"
    p = cell.provenance
    parts = [cell.device, f"image {(cell.image_id or '-').removeprefix('sha256:')[:12]}"]
    parts.append(f"llama.cpp {p.get('llama_cpp_build', '?')}")
    if cell.output is not None:  # the output check against the CPU, before the bench
        parts.append(f"output {cell.output.verdict} (KL {cell.output.kl_mean:.3g} vs CPU)")
    versions = stack(p)
    if "ggml" not in versions:  # the cpu image's stack is ggml itself
        parts.append(f"ggml {p.get('ggml_version', '?')}")
    if versions != "-":
        parts.append(versions)
    return ", ".join(parts)


def _measured(cell: CellResult) -> list[tuple[Measurement, dict[str, Any]]]:
    """Each measurement with the llama-bench JSON entry it was read from (same order)."""
    raw = cell.raw_json if isinstance(cell.raw_json, list) else []
    entries = [e if isinstance(e, dict) else {} for e in raw]
    entries += [{}] * (len(cell.measurements) - len(entries))
    return list(zip(cell.measurements, entries, strict=False)) if cell.ok else []


def _row(cell: CellResult, m: Measurement, raw: dict[str, Any]) -> list[str]:
    backend = raw.get("backends") or m.backends or cell.backend
    # llama-bench's own test column: "pp512", "tg128", "pp512 @ d4096" (fa has its column).
    test = test_name(m.n_prompt, m.n_gen, depth=m.n_depth)
    return [
        str(raw.get("model_type", "?")),
        size_text(int(raw.get("model_size") or 0)),
        params_text(int(raw.get("model_n_params") or 0)),
        f"{backend} ({cell.driver})" if cell.driver else str(backend),
        str(raw.get(FLAG["ngl"].field, "?")),
        _fa(raw.get(FLAG["fa"].field)),
        test,
        f"{m.tps:.2f} ± {m.tps_stddev:.2f}",
        f"{joules:.3g}" if (joules := m.energy and m.energy.joules_per_token) else "-",
    ]


def _fa(value: Any) -> str:
    # llama-bench writes -1 for auto, 0/1 (older builds: false/true) for off/on.
    if isinstance(value, bool):
        return "1" if value else "0"
    return "auto" if value == -1 else str(value) if value is not None else "?"
