"""The CPU reference of the output check: computed once per model, build and parameters,
cached under $VKRAMA_HOME/checks; and how any check server is started and scored.

Stage: bench (the output check), below `check`: `serve_and_score` starts one planned
llama-server cell, proves from ggml's log that its stack ran, tokenizes the bundled text
and reads the distributions (`scoring`); `compute` does that for the CPU reference unless
its cache file exists. A cache file is written whole (a temporary name, then a rename) or
not at all. Must not print: steps go to a `Reporter`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vkrama.bench import scoring, stderr
from vkrama.bench.divergence import Top
from vkrama.bench.plan import BenchCell
from vkrama.bench.run import run_cells
from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import Reporter, Step
from vkrama.results.records import CellResult, CellStatus

if TYPE_CHECKING:
    from vkrama.engine import Engine
    from vkrama.store import LocalModel


@dataclass(frozen=True)
class CheckParams:
    """What every stack is scored on; the reference is cached per these."""

    context: int = 128  # tokens sent at once before the first scored position
    positions: int = 128  # next-token positions scored
    top_k: int = 1000  # probabilities per position (llama-server's n_probs)

    @property
    def needed(self) -> int:
        return self.context + self.positions

    def as_dict(self) -> dict[str, int]:
        return {"context": self.context, "positions": self.positions, "top_k": self.top_k}


@dataclass(frozen=True)
class Reference:
    """The CPU's distributions over the text's tokens, as cached."""

    key: str
    tokens: list[int]
    tops: list[Top]
    build: str
    seconds: float  # what computing it took (a cache hit costs none of it)
    cached: bool = False


def reference_key(model_sha256: str, build: str, params: CheckParams) -> str:
    """What the cached reference depends on: the model, the llama.cpp build, the text and
    the check's parameters."""
    text = hashlib.sha256(scoring.text().encode()).hexdigest()[:16]
    said = json.dumps([model_sha256, build, text, params.as_dict()], sort_keys=True)
    return hashlib.sha256(said.encode()).hexdigest()[:32]


def reference_path(settings: Settings, key: str) -> Path:
    return settings.home / "checks" / f"reference-{key}.json.gz"


class BadInput(Exception):
    """A bad input found while scoring: the run stops, nothing is stored."""

    def __init__(self, error: VkramaError) -> None:
        self.error = error


def compute(
    engine: Engine,
    settings: Settings,
    cell: BenchCell,
    model: LocalModel,
    images: dict[str, tuple[str, dict[str, str]]],
    params: CheckParams,
    timeout: float,
    on_progress: Reporter,
) -> Reference:
    """The cached reference, or the CPU's distributions computed in `cell` and cached."""
    build = images.get(cell.image, ("", {}))[1].get("llama_cpp_build", "")
    key = reference_key(model.sha256, build, params)
    path = reference_path(settings, key)
    if path.exists():
        data = json.loads(gzip.decompress(path.read_bytes()))
        tops = [tuple((int(t), float(p)) for t, p in top) for top in data["tops"]]
        on_progress(Step(f"reference: cached {path}"))
        return Reference(key, data["tokens"], tops, build, float(data["seconds"]), True)
    found: dict[str, Any] = {}
    errors: list[VkramaError] = []

    def runner(engine: Engine, cell: BenchCell) -> CellResult:
        started = time.monotonic()
        try:
            found["tokens"], found["tops"] = serve_and_score(
                engine, cell, params, timeout, None, on_progress
            )
        except (VkramaError, BadInput) as error:
            errors.append(error.error if isinstance(error, BadInput) else error)
            return cell.failed(errors[-1].message)
        found["seconds"] = round(time.monotonic() - started, 2)
        return replace(cell.failed(), status=CellStatus.OK)

    on_progress(Step("reference: the CPU's distributions over the text (cached after this)"))
    _, interrupted = run_cells(
        engine, [cell], timeout=timeout, on_progress=on_progress, runner=runner
    )
    if interrupted:
        raise KeyboardInterrupt
    if errors:
        error = errors[0]
        raise VkramaError(
            f"the CPU reference failed: {error.message}",
            hint=error.hint or "`vkrama serve MODEL --backend cpu` shows whether it loads",
            status=error.status if error.status != ExitStatus.ERROR else ExitStatus.INVALID_MODEL,
        )
    write(path, {"tokens": found["tokens"], "tops": found["tops"], "seconds": found["seconds"],
                  "build": build, "params": params.as_dict()})  # fmt: skip
    return Reference(key, found["tokens"], found["tops"], build, found["seconds"])


def write(path: Path, data: dict[str, Any]) -> None:
    """Whole or not at all: a reference half written would be read as the truth."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}")
    part.write_bytes(gzip.compress(json.dumps(data).encode()))
    part.replace(path)


def serve_and_score(
    engine: Engine,
    cell: BenchCell,
    params: CheckParams,
    timeout: float,
    expected: list[int] | None,
    on_progress: Reporter,
) -> tuple[list[int], list[Top]]:
    """Start the cell's server, prove its stack ran, tokenize the text, score it."""
    from vkrama.serve import containers, ready

    url, alias = cell.spec.labels["vkrama.url"], cell.spec.labels["vkrama.alias"]
    container = engine.run(cell.spec)
    try:
        ready.wait_ready(url, alias, timeout,
                         is_running=lambda: engine.alive(container))  # fmt: skip
    except VkramaError as error:
        said = _first_error(containers.log_tail(engine, container, 40))
        raise VkramaError(
            f"{error.message}: {said}" if said else error.message,
            hint="is it a GGUF this llama.cpp build loads? `vkrama serve MODEL --backend cpu`"
            " shows the server's whole log",
            status=error.status,
        ) from None
    log = "\n".join(engine.logs(container, stdout=False))
    reason, _ = stderr.verify(cell.backend, cell.driver, stderr.observe(log), [])
    if reason is not None:
        raise VkramaError(reason, status=ExitStatus.BENCH_FAILED)
    tokens = scoring.tokenize(url, {}, scoring.text())
    if expected is not None and tokens != expected:
        raise BadInput(
            VkramaError(
                f"vocabulary mismatch: {cell.key} tokenizes the text into {len(tokens)} tokens,"
                f" the CPU reference into {len(expected)}"
                + ("" if len(tokens) != len(expected) else " (other ids)"),
                hint="every stack must load the same model file; nothing was stored",
                status=ExitStatus.INVALID_MODEL,
            )
        )
    if len(tokens) < params.needed + 1:
        raise BadInput(
            VkramaError(
                f"the text is {len(tokens)} tokens long for this model; the check needs"
                f" {params.needed + 1} (--context {params.context} + --positions"
                f" {params.positions} + 1)",
                hint="lower --context or --positions; nothing was stored",
                status=ExitStatus.USAGE,
            )
        )
    started = time.monotonic()

    def progress(done: int) -> None:
        if done == params.positions or done % 32 == 0:
            rate = done / max(time.monotonic() - started, 1e-9)
            on_progress(Step(f"  {cell.key}: {done}/{params.positions} positions ({rate:.1f}/s)"))

    tops = scoring.distributions(url, {}, tokens, params.context, params.positions,
                                 params.top_k, progress)  # fmt: skip
    return tokens, tops


def _first_error(lines: list[str]) -> str:
    """The first line llama.cpp logged at error level (` E `), without its timestamp: the
    cause, where the last lines are only its consequences ("exiting due to ...")."""
    for line in lines:
        stamp, sep, rest = line.partition(" E ")
        if sep and not stamp.strip(" .0123456789"):
            return " ".join(rest.split())
    return lines[-1].strip() if lines else ""
