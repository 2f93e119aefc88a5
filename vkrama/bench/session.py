"""One bench run end to end: model, hardware, matrix, images, cells, results store.

Stage: the bench pipeline's driver (store ─► hardware ─► backends ─► images ─► bench.plan
─► bench.run ─► results). `plan` is the dry-run (names images and plans every cell, pulls,
builds and starts nothing), `prepare` the real thing; both resolve through `vkrama.stack`.
Which cells a request asks for is `bench.matrix`'s. Must not print: steps go to a `Reporter`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from vkrama import __version__, stack
from vkrama.bench import check_store, powerwatch, serving, split, tuned
from vkrama.bench import plan as planning
from vkrama.bench.arrivals import CannotSend
from vkrama.bench.matrix import BenchRequest, matrix, unavailable_cell
from vkrama.bench.run import run_cells
from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.hardware.power import find_counters, sysfs_root
from vkrama.progress import NULL, Reporter, Step
from vkrama.results import tunings
from vkrama.results.records import CellResult, RunStatus

if TYPE_CHECKING:
    from vkrama.backends import Choice
    from vkrama.engine import Engine
    from vkrama.hardware import HardwareProfile
    from vkrama.results import RunInfo
    from vkrama.store import LocalModel


@dataclass(frozen=True)
class BenchPlan:
    request: BenchRequest
    model: LocalModel
    profile: HardwareProfile
    cells: list[planning.BenchCell]
    unavailable: list[CellResult]  # requested cells that cannot run here, with the reason
    images: dict[str, tuple[str, dict[str, str]]]  # image ref -> (id, provenance)
    threads: int
    token: str = ""  # the vkrama.bench-run label of every cell's container


@dataclass(frozen=True)
class BenchOutcome:
    run_id: int | None
    results: list[CellResult]
    interrupted: bool
    tests: list[str]

    @property
    def status(self) -> RunStatus:
        if self.interrupted:
            return RunStatus.INTERRUPTED
        ok = self.results and all(r.ok for r in self.results)
        return RunStatus.OK if ok else RunStatus.FAILED


def plan(settings: Settings, request: BenchRequest, on_progress: Reporter = NULL) -> BenchPlan:
    """The --dry-run: every cell planned from what the store and the host have; nothing is
    pulled, built or created."""
    return _prepare(settings, request, stack.PLAN, on_progress, None)


def prepare(
    settings: Settings, request: BenchRequest, engine: Engine, on_progress: Reporter = NULL
) -> BenchPlan:
    """Model, hardware, the matrix and its images (pulled or built); one cell per choice."""
    return _prepare(settings, request, stack.Fetch(engine), on_progress, engine)


@dataclass(frozen=True)
class Selection:
    """The cells a request asks for, resolved: model, host, each stack ready to run (image,
    caches), and the cells this host cannot run, each with its reason."""

    resolution: stack.Resolution
    unavailable: list[CellResult]


def select(
    settings: Settings, request: BenchRequest, supply: stack.Supply, on_progress: Reporter
) -> Selection:
    """The one cell selection of bench and tune: `bench.matrix` over the host, resolved
    through `vkrama.stack`; a stack whose image cannot be had is an unavailable cell."""
    unavailable: list[CellResult] = []

    def choose(model: LocalModel, profile: HardwareProfile) -> list[Choice]:
        choices, cannot = matrix(profile, request)
        unavailable.extend(cannot)
        return choices

    resolution = stack.resolve(settings, request.model, choose, supply, on_progress)
    for choice, error in resolution.failed:
        unavailable.append(unavailable_cell(choice.backend, choice.driver, error.message))
    return Selection(resolution, unavailable)


def _prepare(settings: Settings, request: BenchRequest, supply: stack.Supply,
             on_progress: Reporter, engine: Engine | None) -> BenchPlan:  # fmt: skip
    workers = split.workers(request.rpc, engine)  # first: each answers, or nothing starts
    selection = select(settings, request, supply, on_progress)
    resolution, unavailable = selection.resolution, selection.unavailable
    model = resolution.model
    threads = request.params.threads or planning.physical_cores()
    token = secrets.token_hex(4)
    key = resolution.profile.gpu_key(request.gpu if isinstance(request.gpu, int) else None)
    found = tunings.newest(settings, model.sha256, key) if request.tuned else None
    cells: list[planning.BenchCell] = []
    for ready in resolution.stacks:
        choice = ready.choice
        if request.serve is not None:
            from vkrama.serve.plan import pick_port

            slot = _slot(request, token, ready, len(cells))
            port = pick_port("127.0.0.1", "auto")
            planned = [serving.plan_serve_cell(slot, model, request.serve, port=port)]
        elif found is not None:
            given = frozenset({"sm"} if request.split_mode is not None else ())
            slot_of = partial(_slot, request, token)
            planned = tuned.cells(request.params, found, ready, given, slot_of, len(cells),
                                  model, threads)  # fmt: skip
            for cell in planned:
                on_progress(Step(f"cell {cell.key}: {cell.tuning}"))
        else:
            slot = _slot(request, token, ready, len(cells))
            planned = [planning.plan_cell(slot, model.files, model.name, request.params,
                                          threads=threads)]  # fmt: skip
        for cell in planned:
            on_progress(Step(f"cell {cell.key}: {choice.reason}"))
        cells += planned
    leader = partial(_slot, request, token, position=len(cells))  # bench --rpc's, if any
    cells += split.cells(settings, supply, resolution, leader, request.params, workers, threads,
                         on_progress)  # fmt: skip
    if not cells and resolution.failed:
        raise resolution.failed[0][1]  # its own hint says how to get the image
    if not cells and unavailable:
        first = unavailable[0]
        name = f"{first.backend}/{first.driver}" if first.driver else first.backend
        raise VkramaError(
            f"nothing to bench: {name} is unavailable here: {first.reason}",
            hint="`vkrama devices` shows what this machine can run",
            status=ExitStatus.BACKEND_UNAVAILABLE,
        )
    return BenchPlan(request, model, resolution.profile, cells, unavailable, resolution.images,
                     threads, token)  # fmt: skip


def _slot(request: BenchRequest, token: str, ready: stack.Stack, position: int) -> planning.Slot:
    return planning.Slot(
        ready.choice, ready.image, token, position, request.env, request.unset_env, ready.cache
    )


def execute(
    engine: Engine, settings: Settings, bench_plan: BenchPlan, on_progress: Reporter = NULL
) -> BenchOutcome:
    """Run the planned cells one after another, storing each as soon as it ends."""
    from vkrama import results

    request = bench_plan.request
    for line in reap(engine, settings):
        on_progress(Step(line))
    run_id = None
    if request.save:
        run_id = results.start_run(settings, run_info(bench_plan))
    kept: list[CellResult] = []
    checked = check_store.before_bench(engine, settings, request, run_id, on_progress)

    def keep(result: CellResult) -> None:
        # Stored the moment a cell ends, so that a Ctrl-C later loses nothing finished.
        kept.append(result := checked.attach(result))
        if run_id is not None:
            results.add_cell(settings, run_id, len(kept) - 1, result)

    for result in bench_plan.unavailable:
        keep(result)
    timeout = request.timeout if request.timeout is not None else settings["bench.timeout"]
    # Each GPU's own energy counter (and RAPL for cpu cells), where this host has one.
    power = find_counters(bench_plan.profile, sysfs_root(settings))
    runner: Callable[[Engine, planning.BenchCell], CellResult] | None = None
    if request.serve is not None:
        serve_params = request.serve

        def runner(engine: Engine, cell: planning.BenchCell) -> CellResult:
            serve = partial(serving.run_serve_cell, engine, cell, serve_params,
                            timeout=float(timeout), on_progress=on_progress)  # fmt: skip
            return powerwatch.of_levels(power, cell.gpus, lambda spans: serve(spans=spans))

    interrupted = False
    try:
        _, interrupted = run_cells(
            engine,
            bench_plan.cells,
            timeout=float(timeout),
            images=bench_plan.images,
            flash_attn_varied=bool(request.params.flash_attn),
            on_progress=on_progress,
            on_result=keep,
            runner=runner,
            power=power,
        )
    except KeyboardInterrupt:  # between cells: the finished ones are stored already
        interrupted = True
    except CannotSend:
        # A usage error found once the generator's cost was measured: the run stores
        # nothing (its container is gone already: run_cells removes it on every way out).
        if run_id is not None:
            results.discard_run(settings, run_id)
        raise
    tests = [] if request.serve else request.params.expected_tests()
    outcome = BenchOutcome(run_id, kept, interrupted, tests)
    if run_id is not None:
        results.finish_run(settings, run_id, outcome.status)
    return outcome


def reap(engine: Engine | None, settings: Settings) -> list[str]:
    """Mark runs whose vkrama died (kill -9, crash, reboot) `abandoned`, and remove the
    containers they left (by their run label); what was done, one line each.

    Only runs of this results store are judged, so a bench of another VKRAMA_HOME on the
    same podman is never touched. Without an engine, runs are only marked.
    """
    from vkrama import results

    told = [
        f"run {run.id} was left running by vkrama pid "
        f"{run.info.owner.pid if run.info.owner else '?'}, which is gone: marked abandoned"
        for run in results.abandon_dead_runs(settings)
    ]
    if engine is None:
        return told
    tokens = results.abandoned_tokens(settings)
    if not tokens:
        return told
    with contextlib.suppress(VkramaError):  # a sweep must never stop the bench asked for
        for container in engine.containers({"vkrama.role": "bench"}):
            if container.labels.get("vkrama.bench-run") in tokens:
                engine.remove(container.id)
                told.append(f"removed {container.name}, left by an abandoned run")
    return told


def run_info(bench_plan: BenchPlan) -> RunInfo:
    p = bench_plan
    return run_info_of(p.request, p.model, p.profile, p.threads, p.token)


def run_info_of(
    request: BenchRequest, model: LocalModel, profile: HardwareProfile, threads: int, token: str
) -> RunInfo:
    """A run's record header: host, kernel, GPUs, model, parameters, vkrama version (bench's,
    and tune's, whose trials are bench cells)."""
    from vkrama import results

    if request.serve is not None:
        params = request.serve.as_dict()
    else:
        params = request.params.as_dict()
        params["threads"] = threads
    return results.RunInfo(
        host=socket.gethostname(),
        kernel=platform.release(),
        gpus=[
            {"index": g.index, "ids": g.ids, "name": g.name, "kernel_driver": g.kernel_driver}
            for g in profile.gpus
        ],
        gpu_key=profile.gpu_key(request.gpu if isinstance(request.gpu, int) else None),
        model_name=model.name,
        model_sha256=model.sha256,
        params=params,
        vkrama_version=__version__,
        model=model_facts(model),
        token=token,
        owner=results.current_owner(os.getpid()),
    )


def model_facts(model: LocalModel) -> dict[str, object]:
    """What results show about the model besides its path: what the GGUF header says."""
    meta = model.metadata
    return {
        "name": meta.name or model.name,
        "architecture": meta.architecture,
        "parameter_count": meta.parameter_count,
        "quantization": meta.quantization,
        "size": model.size,
    }
