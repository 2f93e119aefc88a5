"""The output check's outcome: stored as each stack's `OutputCheck`, and consulted by `bench`.

Stage: bench (the output check), above `check`: `run` is `vkrama check` (execute, then
store unless --no-save), `before_bench` is what `bench` runs first (the check of each
stack not yet checked for this model, GPU set and image, stored with the run),
`guard_tuning` what `tune` asks before it keeps a flag that changes the arithmetic. Must not
print: steps go to a `Reporter`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vkrama.backends import env_switches
from vkrama.bench.check import (
    CheckParams,
    CheckPlan,
    CheckRequest,
    CheckRow,
    execute,
    prepare,
)
from vkrama.bench.matrix import BenchRequest
from vkrama.bench.plan import BenchCell
from vkrama.bench.reference import Reference
from vkrama.config import Settings
from vkrama.errors import VkramaError
from vkrama.llama_flags import FLAG
from vkrama.progress import NULL, Reporter, Step
from vkrama.results.records import CellResult, OutputCheck, RunStatus
from vkrama.results.tunings import TunedStack

if TYPE_CHECKING:
    from vkrama.engine import Engine


@dataclass(frozen=True)
class CheckOutcome:
    """The reference used and one row per stack."""

    reference: Reference
    rows: list[CheckRow]
    params: CheckParams

    @property
    def all_ok(self) -> bool:
        return bool(self.rows) and all(r.verdict == "ok" for r in self.rows)

    def lines(self) -> list[str]:
        """What the table does not say: why each stack that is not ok is not, and the cost."""
        said = [f"{r.name}: {r.verdict}: {r.reason}" for r in self.rows if r.verdict != "ok"]
        ref = self.reference
        cost = "cached" if ref.cached else "computed now"
        said.append(
            f"reference: the CPU, llama.cpp build {ref.build or '?'}, {cost} ({ref.seconds:.1f} s"
            f" for {self.params.positions} positions after {self.params.context} tokens)"
        )
        return said

    def as_dict(self) -> dict[str, Any]:
        ref = self.reference
        return {
            "reference": {"key": ref.key, "build": ref.build, "cached": ref.cached,
                          "seconds": ref.seconds, **self.params.as_dict()},
            "stacks": [r.as_dict() for r in self.rows],
        }  # fmt: skip


def run(
    engine: Engine, settings: Settings, checked: CheckPlan, on_progress: Reporter = NULL
) -> CheckOutcome:
    """`execute`, then the verdicts stored (unless --no-save): what `bench` consults."""
    reference, rows = execute(engine, settings, checked, on_progress)
    if checked.request.save:
        store(settings, checked, reference, rows)
    return CheckOutcome(reference, rows, checked.request.params)


def gpu_key(checked: CheckPlan) -> str:
    gpu = checked.request.cells.gpu
    return checked.profile.gpu_key(gpu if isinstance(gpu, int) else None)


def store(
    settings: Settings,
    checked: CheckPlan,
    reference: Reference,
    rows: list[CheckRow],
    run_id: int | None = None,
) -> list[OutputCheck]:
    """Each judged row as an `OutputCheck` (a failed stack is not stored: it is checked
    again next time)."""
    from vkrama.results import checks

    stored = []
    for row in rows:
        if row.divergence is None:
            continue
        found = row.divergence
        check = OutputCheck(
            gpu_key=gpu_key(checked), model_sha256=checked.model.sha256, backend=row.backend,
            driver=row.driver, device=row.device, image_id=row.image_id, verdict=row.verdict,
            reason=row.reason, kl_mean=found.kl_mean, kl_p99=found.kl_p99, top1=found.top1,
            server_args=checked.request.server_args, env=dict(checked.request.cells.env),
            build=reference.build,
            seconds=row.duration_s, figures=found.as_dict(), run_id=run_id,
        )  # fmt: skip
        checks.store(settings, check)
        stored.append(check)
    return stored


@dataclass(frozen=True)
class Checked:
    """Each stack's newest output check, by (backend, driver or "", image id)."""

    found: dict[tuple[str, str, str], OutputCheck] = field(default_factory=dict)

    def attach(self, cell: CellResult) -> CellResult:
        """The cell with its stack's check, which its record keeps."""
        output = self.found.get((cell.backend, cell.driver or "", cell.image_id))
        return replace(cell, output=output) if output is not None else cell


def before_bench(
    engine: Engine,
    settings: Settings,
    cells: BenchRequest,
    run_id: int | None,
    on_progress: Reporter = NULL,
) -> Checked:
    """What `bench` runs first (unless --no-check or `bench.check` false): the output check
    of each of its stacks that has none for this model, GPU set and image (stored with the
    run), and every stack's newest check by (backend, driver or "", image id). Its own
    error (a model the CPU cannot load) or a Ctrl-C ends the run before any cell."""
    from vkrama import results

    if not (cells.check and settings["bench.check"]):
        return Checked()
    try:
        return Checked(_before_bench(engine, settings, cells, run_id, on_progress))
    except (KeyboardInterrupt, VkramaError) as stopped:
        if run_id is not None:
            ended = isinstance(stopped, KeyboardInterrupt)
            status = RunStatus.INTERRUPTED if ended else RunStatus.FAILED
            results.finish_run(settings, run_id, status)
        raise


def _before_bench(
    engine: Engine,
    settings: Settings,
    cells: BenchRequest,
    run_id: int | None,
    on_progress: Reporter,
) -> dict[tuple[str, str, str], OutputCheck]:
    from vkrama.results import checks

    checked = prepare(settings, CheckRequest(cells=cells), engine, on_progress)
    known = checks.newest(settings, checked.model.sha256, gpu_key(checked), env=cells.env)

    def image_id(cell: BenchCell) -> str:
        return checked.images.get(cell.image, ("", {}))[0]

    todo = [c for c in checked.cells if (c.backend, c.driver or "", image_id(c)) not in known]
    if not todo:
        return known
    started = time.monotonic()
    names = ", ".join(c.key for c in todo)
    on_progress(Step(f"output check first (--no-check skips it): {names} against the CPU"))
    reference, rows = execute(
        engine, settings, replace(checked, cells=todo, unavailable=[]), on_progress
    )
    for made in store(settings, checked, reference, rows, run_id):
        known[(made.backend, made.driver or "", made.image_id)] = made
    for row in rows:
        on_progress(Step(f"output check {row.name}: {row.verdict}: {row.reason}"))
    paid = "cached" if reference.cached else f"{reference.seconds:.1f} s"
    on_progress(Step(f"output check took {time.monotonic() - started:.1f} s (reference {paid})"))
    return known


# llama.cpp flags that change what is computed, not only how fast: the ones a tuning may
# keep only when the stack's output with them stays ok against the CPU (as may each
# stack's own switch marked `numerics`: F16 off, coopmat off, ...).
NUMERICS = ("fa", "ctk", "ctv")
# Runs the output check of one request: `check_rows` (prepare, run, store) unless a test
# stands in for it.
CheckRunner = Callable[["Engine", Settings, CheckRequest, Reporter], list[CheckRow]]


def check_rows(
    engine: Engine, settings: Settings, request: CheckRequest, on_progress: Reporter
) -> list[CheckRow]:
    """`vkrama check` of `request`, stored: each checked stack's row."""
    return run(engine, settings, prepare(settings, request, engine, on_progress), on_progress).rows


def changes_numerics(flag: str) -> bool:
    """A tuned key (a llama.cpp flag or a stack's switch) that changes the arithmetic."""
    return flag in NUMERICS or env_switches.changes_numerics(flag)


def guard_tuning(
    engine: Engine,
    settings: Settings,
    cells: BenchRequest,
    tuned: TunedStack,
    on_progress: Reporter = NULL,
    check: CheckRunner = check_rows,
) -> TunedStack:
    """`tune`'s outcome for one stack, its won settings refused (with the check's KL) when
    those of them that change the arithmetic (flash attention, a quantized KV cache, a
    switch such as GGML_VK_DISABLE_F16) make its llama-server's output other than ok
    against the CPU. A switch reaches the server as it reaches llama-bench: in the
    container's environment (the check's one path for --env). The check is stored."""
    kept = {f: v for f, v in tuned.changed.items() if changes_numerics(f)}
    if not kept or not settings["bench.check"]:
        return tuned
    args = tuple(a for f, v in kept.items() if f in NUMERICS for a in (FLAG[f].server, v))
    env = env_switches.env_of(kept)
    said = " ".join([*args, *(f"{k}={v}" for k, v in env.items())])
    drivers = (tuned.driver,) if tuned.driver else ()
    one = replace(cells, backends=(tuned.backend,), vk_drivers=drivers, every=False,
                  env={**cells.env, **env})  # fmt: skip
    on_progress(Step(f"{tuned.key}: checking its output with {said} against the CPU"))
    rows = check(engine, settings, CheckRequest(cells=one, server_args=args), on_progress)
    if rows and rows[0].verdict == "ok":
        on_progress(Step(f"{tuned.key}: {said}: output ok ({rows[0].reason})"))
        return tuned
    why = f"{rows[0].verdict} output ({rows[0].reason})" if rows else "no output check ran"
    return replace(tuned, refused=why)
