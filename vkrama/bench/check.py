"""`vkrama check`: does each stack compute what the CPU computes, on this model and text?

Stage: bench (the output check), a driver like `bench.session`: the same cell selection
(`bench.matrix.matrix`), the same stacks (`stack.resolve`), each stack's llama-server
planned as `vkrama serve` plans it (`serve.plan`: secure defaults, model read-only), run
one after another by `bench.run.run_cells` (its Ctrl-C handling and container sweep). The
CPU's distributions are the reference, cached per model sha256, llama.cpp build and check
parameters under $VKRAMA_HOME/checks, so the CPU pays once. Must not print: steps go to a
`Reporter`. A bad input (the reference server cannot load the model, a text shorter than
the check needs, a stack whose tokenizer splits the text otherwise) raises one
`VkramaError` before anything is stored.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vkrama import stack
from vkrama.bench import divergence
from vkrama.bench import reference as references
from vkrama.bench.divergence import Divergence, Top
from vkrama.bench.matrix import BenchRequest, matrix
from vkrama.bench.plan import BenchCell, Slot, physical_cores
from vkrama.bench.reference import CheckParams, Reference
from vkrama.bench.run import run_cells
from vkrama.config import Settings
from vkrama.errors import VkramaError
from vkrama.llama_flags import FLAG
from vkrama.progress import NULL, Reporter, Step
from vkrama.results.records import CellResult, CellStatus

if TYPE_CHECKING:
    from vkrama.backends import Choice
    from vkrama.engine import Engine
    from vkrama.hardware import HardwareProfile
    from vkrama.store import LocalModel

# llama-server at -lv 4 names the devices it loads onto: how a stack proves it really ran.
VERBOSE_ARGS = ("-lv", "4")
CTX_MARGIN = 16
__all__ = ["CheckParams", "CheckPlan", "CheckRequest", "CheckRow", "Reference", "plan"]


@dataclass(frozen=True)
class CheckRequest:
    """The cells as `bench` picks them (`cells.backends`, `--vk-driver`, `--gpu`, `--all`);
    `server_args` go to every checked stack's llama-server (e.g. `-fa on -ctk q8_0`), never
    to the reference."""

    cells: BenchRequest
    params: CheckParams = field(default_factory=CheckParams)
    server_args: tuple[str, ...] = ()
    threads: int | None = None  # the reference's --threads; None: physical cores
    # Per server start; None: settings bench.timeout (lavapipe compiles pipelines at start).
    timeout: float | None = None
    save: bool = True


@dataclass(frozen=True)
class CheckRow:
    """One stack's outcome: its divergence from the reference and the verdict."""

    backend: str
    driver: str | None
    device: str
    verdict: str  # ok | drift | wrong | failed
    reason: str
    divergence: Divergence | None = None
    image_id: str = ""
    duration_s: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.driver}" if self.driver else self.backend

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "backend": self.backend,
            "driver": self.driver,
            "device": self.device,
            "verdict": self.verdict,
            "reason": self.reason,
            "image_id": self.image_id,
            "duration_s": self.duration_s,
        }
        found.update(self.divergence.as_dict() if self.divergence else {})
        return found


@dataclass(frozen=True)
class CheckPlan:
    request: CheckRequest
    model: LocalModel
    profile: HardwareProfile
    reference: BenchCell
    cells: list[BenchCell]
    unavailable: list[CellResult]
    images: dict[str, tuple[str, dict[str, str]]]


def plan(settings: Settings, request: CheckRequest, on_progress: Reporter = NULL) -> CheckPlan:
    """The --dry-run: the reference and every stack's server planned, nothing made."""
    return _prepare(settings, request, stack.PLAN, on_progress)


def prepare(
    settings: Settings, request: CheckRequest, engine: Engine, on_progress: Reporter = NULL
) -> CheckPlan:
    return _prepare(settings, request, stack.Fetch(engine), on_progress)


def _prepare(
    settings: Settings, request: CheckRequest, supply: stack.Supply, on_progress: Reporter
) -> CheckPlan:
    from vkrama import backends

    unavailable: list[CellResult] = []

    def choose(model: LocalModel, profile: HardwareProfile) -> list[Choice]:
        choices, cannot = matrix(profile, request.cells)
        unavailable.extend(cannot)
        return [backends.choose(profile, "cpu"), *choices]

    resolution = stack.resolve(settings, request.cells.model, choose, supply, on_progress)
    if not resolution.stacks or resolution.stacks[0].choice.backend != "cpu":
        raise resolution.failed[0][1]  # no cpu image: its own hint says how to get it
    token = secrets.token_hex(4)
    ctx = request.params.needed + CTX_MARGIN
    threads = request.threads or physical_cores()
    model = resolution.model
    ref_stack, *others = resolution.stacks
    reference = _server_cell(
        Slot(ref_stack.choice, ref_stack.image, token, 0, compile_cache=ref_stack.cache),
        model, ctx, (FLAG["t"].server, str(threads)),
    )  # fmt: skip
    cells = []
    for n, ready in enumerate(others, 1):
        slot = Slot(ready.choice, ready.image, token, n, request.cells.env,
                    request.cells.unset_env, ready.cache)  # fmt: skip
        cells.append(_server_cell(slot, model, ctx, request.server_args))
    for choice, error in resolution.failed:
        unavailable.append(
            CellResult(choice.backend, choice.driver, "-", CellStatus.UNAVAILABLE, error.message)
        )
    for cell in cells:
        on_progress(Step(f"check {cell.key}: llama-server in {cell.image}"))
    return CheckPlan(
        request, model, resolution.profile, reference, cells, unavailable, resolution.images
    )


def _server_cell(slot: Slot, model: LocalModel, ctx: int, args: tuple[str, ...]) -> BenchCell:
    """llama-server as `vkrama serve --parallel 1 --ctx-size N` starts it, one slot (its
    prompt cache holds each position's prefix), labelled as this check's container."""
    from vkrama.serve import plan as serving
    from vkrama.serve.plan import pick_port

    spec = serving.plan(
        serving.ServeRequest(
            model=str(model.path), ctx_size=ctx, parallel=1, extra_args=VERBOSE_ARGS + args
        ),
        serving.Resolved(
            model, slot.choice, slot.image, pick_port("127.0.0.1", "auto"),
            compile_cache=slot.compile_cache,
        ),
    )  # fmt: skip
    labels = {**spec.labels, "vkrama.role": "bench", "vkrama.bench-run": slot.run_token,
              "vkrama.driver": slot.choice.driver or ""}  # fmt: skip
    spec = replace(spec, name=slot.name("check"), labels=labels, env=slot.env(spec.env))
    return BenchCell.of(slot.choice, slot.image, spec)


def execute(
    engine: Engine, settings: Settings, checked: CheckPlan, on_progress: Reporter = NULL
) -> tuple[Reference, list[CheckRow]]:
    """The reference (from the cache, or computed on the CPU), then each stack against it."""
    timeout = float(checked.request.timeout or settings["bench.timeout"])
    reference = references.compute(
        engine, settings, checked.reference, checked.model, checked.images,
        checked.request.params, timeout, on_progress,
    )  # fmt: skip
    scored: dict[str, list[Top]] = {}
    problems: list[VkramaError] = []

    def runner(engine: Engine, cell: BenchCell) -> CellResult:
        started = time.monotonic()
        try:
            _, tops = references.serve_and_score(engine, cell, checked.request.params, timeout,
                                                 reference.tokens, on_progress)  # fmt: skip
        except references.BadInput as bad:
            problems.append(bad.error)
            raise KeyboardInterrupt from None  # stop the run: nothing further is scored
        except VkramaError as error:
            return cell.failed(error.message, duration_s=time.monotonic() - started)
        scored[cell.spec.name or cell.key] = tops
        return cell.failed(status=CellStatus.OK, duration_s=time.monotonic() - started)

    results, interrupted = run_cells(
        engine, checked.cells, timeout=timeout, images=checked.images,
        on_progress=on_progress, runner=runner,
    )  # fmt: skip
    if problems:
        raise problems[0]
    if interrupted:
        raise KeyboardInterrupt
    rows = [
        CheckRow(c.backend, c.driver, c.device, "failed", c.reason or str(c.status))
        for c in checked.unavailable
    ]
    for cell, result in zip(checked.cells, results, strict=False):
        if not result.ok:
            rows.append(CheckRow(result.backend, result.driver, result.device, "failed",
                                 result.reason, image_id=result.image_id,
                                 duration_s=result.duration_s))  # fmt: skip
            continue
        found = divergence.compare(reference.tops, scored[cell.spec.name or cell.key])
        verdict, why = divergence.verdict(found)
        rows.append(CheckRow(result.backend, result.driver, result.device, verdict, why,
                             found, result.image_id, result.duration_s))  # fmt: skip
    return reference, rows
