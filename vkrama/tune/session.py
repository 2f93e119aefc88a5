"""One `vkrama tune` end to end: resolve the stacks as bench does, search each one's flags
with real llama-bench trials, store every trial as a cell and each stack's outcome.

Stage: tune's driver (stack.resolve ─► bench.matrix/plan ─► tune.search ─► bench.run ─►
results). `plan` is the --dry-run: it prints what the first trial of each stack runs and
what would be searched, and runs nothing. A stack's outcome is stored only when its search
has ended: an interrupted tuning leaves its run marked interrupted and no outcome for the
stack it was on. Must not print: steps go to a `Reporter`. Over 300 lines because each
stack's preparation (its space, the switches its image reads, the user's --flags checked
against both) and its trials within a shared budget read one plan.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from vkrama import stack
from vkrama.backends import env_switches
from vkrama.backends.env_switches import is_switch
from vkrama.bench import check_store
from vkrama.bench import plan as planning
from vkrama.bench.matrix import BenchRequest
from vkrama.bench.run import run_cells
from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.hardware.power import PowerCounters, find_counters, sysfs_root
from vkrama.images import library
from vkrama.images.provenance import stack_version
from vkrama.progress import NULL, Reporter, Step
from vkrama.results import tunings
from vkrama.results.records import CellResult, RunStatus
from vkrama.tune import search, switches, trials
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
    # The host's counters, read around each trial for `--for joules` (None: not read).
    power: PowerCounters | None = None


@dataclass(frozen=True)
class TuneOutcome:
    tuned: list[tunings.TunedStack]
    run_id: int | None
    interrupted: bool
    # Stacks whose search could not start (budget too small, nothing fits): the others are
    # still tuned and stored.
    failed: list[tuple[str, VkramaError]] = field(default_factory=list)


def plan(settings: Settings, request: TuneRequest, on_progress: Reporter = NULL) -> TunePlan:
    return _prepare(settings, request, stack.PLAN, on_progress)


def prepare(
    settings: Settings,
    request: TuneRequest,
    engine: Engine,
    on_progress: Reporter = NULL,
    power: PowerCounters | None = None,
) -> TunePlan:
    """`power`: the counters `--for joules` reads (None: this host's, under the configured
    sysfs root; tests pass a fake)."""
    return _prepare(settings, request, stack.Fetch(engine), on_progress, engine, power)


def _prepare(
    settings: Settings,
    request: TuneRequest,
    supply: stack.Supply,
    on_progress: Reporter,
    engine: Engine | None = None,  # None: a dry run, whose images are not run
    power: PowerCounters | None = None,
) -> TunePlan:
    n_prompt, n_gen = tunings.sizes(request.objective, request.n_prompt, request.n_gen)
    params = planning.BenchParams(n_prompt, n_gen, request.repetitions, depth=request.depth or ())
    bench = BenchRequest(
        request.model, request.backends, request.vk_drivers, gpu=request.gpu, params=params,
        save=request.save, timeout=request.timeout,
    )  # fmt: skip
    from vkrama.bench.session import select

    selection = select(settings, bench, supply, on_progress)
    resolution, unavailable = selection.resolution, selection.unavailable
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
    if request.objective != trials.JOULES:
        power = None
    else:  # refused before anything runs or is stored
        power = power or find_counters(resolution.profile, sysfs_root(settings))
        for ready in resolution.stacks:
            _counted(power, ready.choice)
    planned = TunePlan(request, bench, resolution.model, resolution.profile, [], unavailable,
                     resolution.images, threads, token, power)  # fmt: skip
    tuned_here = {ready.choice.backend for ready in resolution.stacks}
    for ready in resolution.stacks:
        facts = _facts(planned, ready.choice)
        space, backend = spaces.space(facts, request.only), ready.choice.backend
        # The switches this image's ggml reads (a dry run offers the table's, unchecked).
        read = None
        if engine is not None and env_switches.of_backend(backend):
            provenance = planned.images.get(ready.image, ("", {}))[1]
            try:  # as the image's build recorded them; probed if it is older than that
                read = library.switches_of(engine, ready.image, provenance)
            except VkramaError as error:  # the flags are still tuned; no switch is offered
                on_progress(Step(f"{backend}: no switch offered: {error.message}"))
                read = frozenset()
        for flag in request.only:
            if switches.elsewhere(flag, backend, tuned_here):
                continue  # another stack of this tune reads it: that stack searches it
            if is_switch(flag):
                why = switches.refusal(backend, flag, read, ready.image)
            else:
                why = spaces.unsearchable(facts, flag)
            if why is not None:
                names = switches.names(spaces.space(facts), backend, read)
                raise VkramaError(
                    f"cannot tune {'' if is_switch(flag) else '-'}{flag} on {backend}: {why}",
                    hint=f"--flags takes some of: {', '.join(names)}",
                    status=ExitStatus.USAGE,
                )
        space = switches.widen(space, switches.offered(backend, read, request.only))
        first = _cell(planned, ready, [space.defaults], position=len(planned.stacks))
        planned.stacks.append(StackPlan(ready, space, first))
    return planned


def _counted(power: PowerCounters, choice: Choice) -> None:
    """Refuse `--for joules` on a stack whose device has no readable power counter."""
    counters, why = power.for_cell(choice.gpu_indices)
    if not counters:
        raise VkramaError(
            f"tune --for joules needs a power counter, and {choice.device_label} "
            f"({choice.backend}) has none: {why}",
            hint="`vkrama doctor` lists this host's counters; --for pp, tg or both needs none",
            status=ExitStatus.NO_POWER_COUNTER,
        )


def _facts(planned: TunePlan, choice: Choice) -> spaces.StackFacts:
    """What the search space depends on, from the request, the model and the host."""
    from vkrama.store.gguf_info import layer_counts

    layers, experts = layer_counts(planned.model.files[0])
    memory = choice.gpu.memory_bytes if choice.gpu is not None else None
    request = planned.request
    return spaces.StackFacts(
        backend=choice.backend,
        objective=request.objective,
        n_prompt=request.n_prompt,
        threads=planned.threads,
        logical_cpus=os.cpu_count() or planned.threads,
        gpu_count=max(len(choice.gpu_indices), 1),
        fits=None if not memory else planned.model.size < memory * 0.9,
        n_layer=layers,
        expert_count=experts,
    )


def _cell(
    planned: TunePlan,
    ready: stack.Stack,
    configs: Sequence[spaces.Flags],
    position: int,
    repetitions: int | None = None,
) -> planning.BenchCell:
    choice = ready.choice
    if "sm" in configs[0] and choice.split is not None:  # the split's own -sm, see trials
        choice = replace(choice, split=replace(choice.split, mode=configs[0]["sm"]))
    env = env_switches.env_of(configs[0])  # one process: one value of each switch
    slot = planning.Slot(choice, ready.image, planned.token, position, env, (), ready.cache)
    params = trials.params(planned.bench.params, configs)
    if repetitions is not None:
        params = replace(params, repetitions=repetitions)
    threads = params.threads or planned.threads
    return planning.plan_cell(
        slot, planned.model.files, planned.model.name, params, threads=threads
    )


def execute(
    engine: Engine,
    settings: Settings,
    planned: TunePlan,
    on_progress: Reporter = NULL,
    clock: Callable[[], float] = time.monotonic,
) -> TuneOutcome:
    """Search each stack in turn, the budget shared out over the stacks still to go."""
    from vkrama import results
    from vkrama.bench.session import run_info_of

    request = planned.request
    run_id = None
    if request.save:
        info = run_info_of(
            planned.bench, planned.model, planned.profile, planned.threads, planned.token
        )
        info.params["tune"] = {"objective": request.objective, "budget_s": request.budget_s,
                               "only": list(request.only)}  # fmt: skip
        run_id = results.start_run(settings, info)
    kept: list[CellResult] = []
    timeout = float(request.timeout or settings["bench.timeout"])

    def trial(
        ready: stack.Stack, configs: Sequence[spaces.Flags], repetitions: int, left: float
    ) -> list[CellResult]:
        groups = spaces.together(configs)
        cells = [_cell(planned, ready, [configs[i] for i in group], len(kept) + n, repetitions)
                 for n, group in enumerate(groups)]  # fmt: skip
        # No process runs longer than what is left of the stack's budget (`left`, from the
        # search), so two processes of one trial share it rather than take it each.
        deadline = clock() + left
        ran: list[CellResult] = []
        interrupted = False
        for cell in cells:
            limit = min(timeout, deadline - clock())
            if limit <= 0:
                ran.append(cell.failed("the stack's budget ran out before this trial ran"))
                continue
            done, interrupted = run_cells(
                engine, [cell], timeout=limit, images=planned.images, power=planned.power
            )
            ran += done
            if interrupted:
                break
        # Each row carries the switches it ran with beside its llama-bench flags ("" unset).
        ran = [switches.carried(r, configs[g[0]]) for r, g in zip(ran, groups, strict=False)]
        for result in ran:
            if run_id is not None:
                results.add_cell(settings, run_id, len(kept), result)
            kept.append(result)
        if interrupted:
            raise KeyboardInterrupt
        return ran

    outcome: list[tunings.TunedStack] = []
    failed: list[tuple[str, VkramaError]] = []
    spent = 0.0
    try:
        for number, one in enumerate(planned.stacks):
            budget = (request.budget_s - spent) / (len(planned.stacks) - number)
            name = trials.name(one.ready)
            on_progress(Step(f"{name}: tuning for up to {budget:.0f} s"))
            measure = trials.measure(one.ready, trial, on_progress, clock, request.objective)
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
            record = _record(planned, one, tuned, kept, run_id)
            record = check_store.guard_tuning(engine, settings, planned.bench, record, on_progress)
            if run_id is not None:
                tunings.save(settings, record)
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
    planned: TunePlan,
    one: StackPlan,
    tuned: search.Tuned,
    kept: list[CellResult],
    run_id: int | None,
) -> tunings.TunedStack:
    choice = one.ready.choice
    image_id, provenance = planned.images.get(one.ready.image, ("", {}))
    device = next((c.device for c in reversed(kept) if c.ok), choice.device_label)
    request = planned.request
    return tunings.TunedStack(
        gpu_key=planned.profile.gpu_key(request.gpu if isinstance(request.gpu, int) else None),
        model_sha256=planned.model.sha256, backend=choice.backend, driver=choice.driver,
        device=device, driver_version=stack_version(provenance), image_id=image_id,
        objective=request.objective,
        test=tunings.test_label(request.objective, request.n_prompt, request.n_gen, request.depth),
        flags=tuned.best, defaults=tuned.defaults, tps=tuned.best_score.mean,
        tps_stddev=tuned.best_score.stddev, default_tps=tuned.default_score.mean,
        default_stddev=tuned.default_score.stddev, beyond_noise=tuned.beyond_noise,
        spent_s=round(tuned.spent_s, 1), trials=tuned.trials,
        stopped_by_budget=tuned.stopped_by_budget, run_id=run_id,
    )  # fmt: skip
