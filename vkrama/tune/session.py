"""One `vkrama tune` end to end: resolve the stacks as bench does, search each one's flags
with real llama-bench trials, store every trial as a cell and each stack's outcome.

Stage: tune's driver (stack.resolve ─► bench.matrix/plan ─► tune.search ─► bench.run ─►
results). `plan` is the --dry-run: it prints what the first trial of each stack runs and
what would be searched, and runs nothing. A stack's outcome is stored only when its search
has ended: an interrupted tuning leaves its run marked interrupted and no outcome for the
stack it was on. Must not print: steps go to a `Reporter`.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from vkrama import stack
from vkrama.bench import plan as planning
from vkrama.bench.matrix import BenchRequest, matrix
from vkrama.bench.run import run_cells
from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images.provenance import stack_version
from vkrama.progress import NULL, Reporter, Step
from vkrama.results import tuned as stored
from vkrama.results.records import CellResult, RunStatus
from vkrama.tune import search, trials
from vkrama.tune import space as spaces

if TYPE_CHECKING:
    from vkrama.backends import Choice, GpuSelection
    from vkrama.engine import Engine
    from vkrama.hardware import HardwareProfile
    from vkrama.store import LocalModel


@dataclass(frozen=True)
class TuneRequest:
    model: str
    backends: tuple[str, ...] = ()
    vk_drivers: tuple[str, ...] = ()
    gpu: GpuSelection = None
    depth: tuple[int, ...] = ()
    objective: str = "pp"
    n_prompt: int = 2048
    n_gen: int = 128
    budget_s: float = 600.0
    repetitions: int = 3
    only: tuple[str, ...] = ()  # --flags: search only these
    save: bool = True
    timeout: float | None = None  # per trial; None: settings bench.timeout


@dataclass(frozen=True)
class StackPlan:
    ready: stack.Stack
    space: spaces.Space
    first: planning.BenchCell  # the defaults' trial


@dataclass(frozen=True)
class TunePlan:
    request: TuneRequest
    bench: BenchRequest
    model: LocalModel
    profile: HardwareProfile
    stacks: list[StackPlan]
    unavailable: list[CellResult]
    images: stack.Images
    threads: int
    token: str


@dataclass(frozen=True)
class TuneOutcome:
    tuned: list[stored.TunedStack]
    run_id: int | None
    interrupted: bool
    # Stacks whose search could not start (budget too small, nothing fits): the others are
    # still tuned and stored.
    failed: list[tuple[str, VkramaError]] = field(default_factory=list)


def plan(settings: Settings, request: TuneRequest, on_progress: Reporter = NULL) -> TunePlan:
    return _prepare(settings, request, stack.PLAN, on_progress)


def prepare(
    settings: Settings, request: TuneRequest, engine: Engine, on_progress: Reporter = NULL
) -> TunePlan:
    return _prepare(settings, request, stack.Fetch(engine), on_progress)


def _prepare(
    settings: Settings, request: TuneRequest, supply: stack.Supply, on_progress: Reporter
) -> TunePlan:
    n_prompt, n_gen = trials.sizes(request.objective, request.n_prompt, request.n_gen)
    params = planning.BenchParams(n_prompt, n_gen, request.repetitions, depth=request.depth or ())
    bench = BenchRequest(
        request.model, request.backends, request.vk_drivers, gpu=request.gpu, params=params,
        save=request.save, timeout=request.timeout,
    )  # fmt: skip
    unavailable: list[CellResult] = []

    def choose(model: LocalModel, profile: HardwareProfile) -> list[Choice]:
        choices, cannot = matrix(profile, bench)
        unavailable.extend(cannot)
        return choices

    resolution = stack.resolve(settings, request.model, choose, supply, on_progress)
    if resolution.failed:
        raise resolution.failed[0][1]  # its hint says how to get the image
    if not resolution.stacks:
        cannot = unavailable[0] if unavailable else None
        raise VkramaError(
            "nothing to tune" + (f": {cannot.backend} is unavailable here: {cannot.reason}"
                                 if cannot else ""),
            hint="`vkrama devices` shows what this machine can run",
            status=ExitStatus.BACKEND_UNAVAILABLE,
        )  # fmt: skip
    threads = planning.physical_cores()
    token = secrets.token_hex(4)
    found = TunePlan(request, bench, resolution.model, resolution.profile, [], unavailable,
                     resolution.images, threads, token)  # fmt: skip
    for ready in resolution.stacks:
        facts = _facts(found, ready.choice)
        space = spaces.space(facts, request.only)
        for flag in request.only:
            why = spaces.unsearchable(facts, flag)
            if why is not None:
                raise VkramaError(
                    f"cannot tune -{flag} on {ready.choice.backend}: {why}",
                    hint=f"--flags takes some of: {', '.join(spaces.space(facts).flags)}",
                    status=ExitStatus.USAGE,
                )
        first = _cell(found, ready, [space.defaults], position=len(found.stacks))
        found.stacks.append(StackPlan(ready, space, first))
    return found


def _facts(found: TunePlan, choice: Choice) -> spaces.Stack:
    """What the search space depends on, from the request, the model and the host."""
    from vkrama.store.gguf_info import layer_counts

    layers, experts = layer_counts(found.model.files[0])
    memory = choice.gpu.memory_bytes if choice.gpu is not None else None
    request = found.request
    return spaces.Stack(
        backend=choice.backend,
        objective=request.objective,
        n_prompt=request.n_prompt,
        threads=found.threads,
        logical_cpus=os.cpu_count() or found.threads,
        gpu_count=max(len(choice.gpu_indices), 1),
        fits=None if not memory else found.model.size < memory * 0.9,
        n_layer=layers,
        expert_count=experts,
    )


def _cell(
    found: TunePlan,
    ready: stack.Stack,
    configs: Sequence[spaces.Flags],
    position: int,
    repetitions: int | None = None,
) -> planning.BenchCell:
    choice = ready.choice
    if "sm" in configs[0] and choice.split is not None:  # the split's own -sm, see trials
        choice = replace(choice, split=replace(choice.split, mode=configs[0]["sm"]))
    slot = planning.Slot(choice, ready.image, found.token, position, {}, (), ready.cache)
    params = trials.params(found.bench.params, configs)
    if repetitions is not None:
        params = replace(params, repetitions=repetitions)
    threads = params.threads or found.threads
    return planning.plan_cell(slot, found.model.files, found.model.name, params, threads=threads)


def execute(
    engine: Engine,
    settings: Settings,
    found: TunePlan,
    on_progress: Reporter = NULL,
    clock: Callable[[], float] = time.monotonic,
) -> TuneOutcome:
    """Search each stack in turn, the budget shared out over the stacks still to go."""
    from vkrama import results
    from vkrama.bench.session import BenchPlan, run_info

    request = found.request
    run_id = None
    if request.save:
        bench_plan = BenchPlan(found.bench, found.model, found.profile, [], found.unavailable,
                               found.images, found.threads, found.token)  # fmt: skip
        info = run_info(bench_plan)
        info.params["tune"] = {"objective": request.objective, "budget_s": request.budget_s,
                               "only": list(request.only)}  # fmt: skip
        run_id = results.start_run(settings, info)
    kept: list[CellResult] = []
    timeout = float(request.timeout or settings["bench.timeout"])

    def trial(
        ready: stack.Stack, configs: Sequence[spaces.Flags], repetitions: int
    ) -> list[CellResult]:
        cells = [_cell(found, ready, [configs[i] for i in group], len(kept) + n, repetitions)
                 for n, group in enumerate(trials.together(configs))]  # fmt: skip
        ran, interrupted = run_cells(engine, cells, timeout=timeout, images=found.images)
        for result in ran:
            if run_id is not None:
                results.add_cell(settings, run_id, len(kept), result)
            kept.append(result)
        if interrupted:
            raise KeyboardInterrupt
        return ran

    outcome: list[stored.TunedStack] = []
    failed: list[tuple[str, VkramaError]] = []
    spent = 0.0
    try:
        for number, one in enumerate(found.stacks):
            budget = (request.budget_s - spent) / (len(found.stacks) - number)
            name = trials.name(one.ready)
            on_progress(Step(f"{name}: tuning for up to {budget:.0f} s"))
            measure = trials.measure(one.ready, trial, on_progress)
            began = clock()
            try:
                tuned = search.search(one.space, measure, clock, budget, request.repetitions)
            except VkramaError as error:
                if error.status not in (ExitStatus.BUDGET, ExitStatus.NOTHING_FITS):
                    raise
                failed.append((name, error))  # this stack's, said at the end; on to the next
                continue
            finally:
                spent += clock() - began
            record = _record(found, one, tuned, kept, run_id)
            if run_id is not None:
                stored.save(settings, record)
            on_progress(Step(record.line))
            outcome.append(record)
    except KeyboardInterrupt:
        if run_id is not None:
            results.finish_run(settings, run_id, RunStatus.INTERRUPTED)
        return TuneOutcome(outcome, run_id, True)
    except VkramaError:
        if run_id is not None:
            results.finish_run(settings, run_id, RunStatus.FAILED)
        raise
    if run_id is not None:
        results.finish_run(settings, run_id, RunStatus.FAILED if failed else RunStatus.OK)
    return TuneOutcome(outcome, run_id, False, failed)


def _record(
    found: TunePlan,
    one: StackPlan,
    tuned: search.Tuned,
    kept: list[CellResult],
    run_id: int | None,
) -> stored.TunedStack:
    choice = one.ready.choice
    image_id, provenance = found.images.get(one.ready.image, ("", {}))
    device = next((c.device for c in reversed(kept) if c.ok), choice.device_label)
    request = found.request
    return stored.TunedStack(
        gpu_key=found.profile.gpu_key(request.gpu if isinstance(request.gpu, int) else None),
        model_sha256=found.model.sha256, backend=choice.backend, driver=choice.driver,
        device=device, driver_version=stack_version(provenance), image_id=image_id,
        objective=request.objective,
        test=trials.test_label(request.objective, request.n_prompt, request.n_gen, request.depth),
        flags=tuned.best, defaults=tuned.defaults, tps=tuned.best_score.mean,
        tps_stddev=tuned.best_score.stddev, default_tps=tuned.default_score.mean,
        default_stddev=tuned.default_score.stddev, beyond_noise=tuned.beyond_noise,
        spent_s=round(tuned.spent_s, 1), trials=tuned.trials,
        stopped_by_budget=tuned.stopped_by_budget, run_id=run_id,
    )  # fmt: skip
