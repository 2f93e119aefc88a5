"""One bench run end to end: model, hardware, matrix, images, cells, results store.

Stage: the bench pipeline's driver (store ─► hardware ─► backends ─► images ─► bench.plan
─► bench.run ─► results). `prepare` with `engine=None` is the dry-run: it names images and
plans every cell but pulls, builds and starts nothing. Must not print: steps go to a
`Reporter`. Over 300 lines because prepare, execute and the run's
bookkeeping (records, dead-run sweep) share one plan; layout-wip splits it with the Reporter.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vkrama import __version__
from vkrama.backends import compile_cache
from vkrama.bench import plan as planning
from vkrama.bench import serving
from vkrama.bench.run import run_cells
from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Reporter, Step
from vkrama.results.records import CellResult, CellStatus, RunStatus

if TYPE_CHECKING:
    from vkrama.backends import Choice, GpuSelection
    from vkrama.engine import Engine
    from vkrama.hardware import HardwareProfile
    from vkrama.results import RunInfo
    from vkrama.store import LocalModel

UNAVAILABLE = "unavailable: "


@dataclass(frozen=True)
class BenchRequest:
    """What the user asked for, typed; the CLI builds it from flags."""

    model: str
    backends: tuple[str, ...] = ()  # empty: every usable backend (or vulkan if drivers given)
    vk_drivers: tuple[str, ...] = ()
    every: bool = False  # --all
    gpu: GpuSelection = None  # an index, several (split), "all" (split) or "each" (+ split)
    split_mode: str | None = None
    tensor_split: tuple[float, ...] = ()
    params: planning.BenchParams = field(default_factory=planning.BenchParams)
    env: Mapping[str, str] = field(default_factory=dict)  # laid over every cell's env
    unset_env: tuple[str, ...] = ()  # removed from every cell's env (e.g. to provoke failure)
    save: bool = True
    timeout: float | None = None  # per cell; None: settings bench.timeout
    # Set: a serving benchmark (llama-server under load) instead of llama-bench.
    serve: serving.ServeParams | None = None


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


def prepare(
    settings: Settings,
    request: BenchRequest,
    engine: Engine | None,
    on_progress: Reporter = NULL,
) -> BenchPlan:
    """Model, hardware, the matrix and its images; one planned cell per runnable choice."""
    from vkrama import hardware, store

    model = (
        store.resolve(settings, request.model)
        if engine is None
        else store.ensure(settings, request.model, on_progress=on_progress)
    )
    profile = hardware.detect_host(settings)
    choices, unavailable = matrix(profile, request)
    threads = request.params.threads or planning.physical_cores()
    token = secrets.token_hex(4)
    images: dict[str, tuple[str, dict[str, str]]] = {}
    image_errors: dict[str, VkramaError] = {}  # a backend whose image failed is not retried
    cells = []
    for position, choice in enumerate(choices):
        try:
            if choice.backend in image_errors:
                raise image_errors[choice.backend]
            image = _image(engine, settings, choice.backend, images, on_progress)
        except VkramaError as error:
            image_errors[choice.backend] = error
            unavailable.append(_unavailable(choice.backend, choice.driver, error.message))
            continue
        cache = compile_cache.for_backend(settings.home, choice.backend)
        if cache is not None and engine is not None:
            compile_cache.ensure(cache)
        slot = planning.Slot(choice, image, token, position, request.env, request.unset_env, cache)
        if request.serve is not None:
            from vkrama.serve.plan import pick_port

            port = pick_port("127.0.0.1", "auto")
            cell = serving.plan_serve_cell(slot, model, request.serve, port=port)
        else:
            cell = planning.plan_cell(
                slot, model.files, model.name, request.params, threads=threads
            )
        on_progress(Step(f"cell {cell.key}: {choice.reason}"))
        cells.append(cell)
    if not cells and image_errors:
        raise next(iter(image_errors.values()))  # its own hint says how to get the image
    if not cells and unavailable:
        raise VkramaError(
            f"nothing to bench: {unavailable[0].reason.removeprefix(UNAVAILABLE)}",
            hint="`vkrama devices` shows what this machine can run",
            status=ExitStatus.BACKEND_UNAVAILABLE,
        )
    return BenchPlan(request, model, profile, cells, unavailable, images, threads, token)


def matrix(
    profile: HardwareProfile, request: BenchRequest
) -> tuple[list[Choice], list[CellResult]]:
    """Backends × Vulkan drivers: the choices to run, and the requested ones that cannot."""
    from vkrama import backends

    for name in request.backends:
        if name not in backends.BACKENDS:
            raise _usage(f"unknown backend {name!r}", f"one of {', '.join(backends.BACKENDS)}")
    for name in request.vk_drivers:
        if name not in backends.VK_DRIVERS:
            raise _usage(
                f"unknown Vulkan driver {name!r}", f"one of {', '.join(backends.VK_DRIVERS)}"
            )
    if request.every or not (request.backends or request.vk_drivers):
        wanted_gpus = _indices(request.gpu)
        found = [
            c
            for c in backends.usable(profile)
            if (wanted_gpus is None or c.gpu is None or c.gpu.index in wanted_gpus)
            and (not request.vk_drivers or c.backend != "vulkan" or c.driver in request.vk_drivers)
        ]
        if not request.every and any(c.gpu is not None for c in found):
            # Without --all, lavapipe (software Vulkan, slower than cpu) only stands in for
            # a GPU on machines that have none; on a real GPU it would only burn time.
            found = [c for c in found if c.driver != "lavapipe"]
        if request.gpu is None or isinstance(request.gpu, int):
            return found, []
        return _splits(profile, request, found), []
    wanted: list[tuple[str, str | None]] = []
    for backend in request.backends or ("vulkan",):
        drivers: tuple[str | None, ...] = (None,)
        if backend == "vulkan" and request.vk_drivers:
            drivers = request.vk_drivers
        wanted += [(backend, driver) for driver in drivers]
    choices, unavailable = [], []
    for backend, driver in dict.fromkeys(wanted):
        try:
            if request.gpu == "each":
                choices += _each(profile, request, backend, driver)
            else:
                choices.append(
                    backends.choose(
                        profile,
                        backend,
                        request.gpu,
                        driver,
                        split_mode=request.split_mode,
                        tensor_split=request.tensor_split,
                    )
                )
        except VkramaError as error:
            unavailable.append(_unavailable(backend, driver, error.message))
    return choices, unavailable


def _indices(gpu: GpuSelection) -> set[int] | None:
    """The GPUs a selection may touch; None: any."""
    if isinstance(gpu, int):
        return {gpu}
    if isinstance(gpu, tuple):
        return set(gpu)
    return None


def _splits(profile: HardwareProfile, request: BenchRequest, found: list[Choice]) -> list[Choice]:
    """The default matrix under --gpu 0,1 / all / each: per stack, the split over its GPUs
    (Vulkan: every Vulkan GPU, whatever its driver), preceded by each GPU alone for each."""
    from vkrama import backends

    out: list[Choice] = []
    stacks = dict.fromkeys(c.backend for c in found if c.gpu is not None)
    for choice in found:
        if choice.gpu is None:
            out.append(choice)  # cpu, lavapipe: unchanged
    for backend in stacks:
        alone = [c for c in found if c.backend == backend and c.gpu is not None]
        if isinstance(request.gpu, tuple):
            order = {index: n for n, index in enumerate(request.gpu)}
            alone.sort(key=lambda c: order[c.gpu.index if c.gpu else 0])
        if request.gpu == "each" or len(alone) < 2:
            out += alone
        if len(alone) > 1:
            out.append(backends.merge(alone, request.split_mode, request.tensor_split))
    return out


def _each(
    profile: HardwareProfile, request: BenchRequest, backend: str, driver: str | None
) -> list[Choice]:
    """--gpu each for one asked-for stack: every GPU it can use alone, then all together."""
    from vkrama import backends

    split = backends.choose(
        profile, backend, "all", driver, split_mode=request.split_mode,
        tensor_split=request.tensor_split,
    )  # fmt: skip
    if len(split.gpus) < 2:
        return [split]
    alone = [backends.choose(profile, backend, g.index, driver) for g in split.gpus]
    return [*alone, split]


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

    def keep(result: CellResult) -> None:
        # Stored the moment a cell ends, so that a Ctrl-C later loses nothing finished.
        kept.append(result)
        if run_id is not None:
            results.add_cell(settings, run_id, len(kept) - 1, result)

    for result in bench_plan.unavailable:
        keep(result)
    timeout = request.timeout if request.timeout is not None else settings["bench.timeout"]
    runner: Callable[[Engine, planning.BenchCell], CellResult] | None = None
    if request.serve is not None:
        serve_params = request.serve

        def runner(engine: Engine, cell: planning.BenchCell) -> CellResult:
            return serving.run_serve_cell(
                engine, cell, serve_params, timeout=float(timeout), on_progress=on_progress
            )

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
        )
    except KeyboardInterrupt:  # between cells: the finished ones are stored already
        interrupted = True
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
    """The run's record header: host, kernel, GPUs, model, parameters, vkrama version."""
    from vkrama import results

    profile, request = bench_plan.profile, bench_plan.request
    if request.serve is not None:
        params = request.serve.as_dict()
    else:
        params = request.params.as_dict()
        params["threads"] = bench_plan.threads
    return results.RunInfo(
        host=socket.gethostname(),
        kernel=platform.release(),
        gpus=[
            {"index": g.index, "ids": g.ids, "name": g.name, "kernel_driver": g.kernel_driver}
            for g in profile.gpus
        ],
        gpu_key=results.gpu_key(profile, request.gpu if isinstance(request.gpu, int) else None),
        model_name=bench_plan.model.name,
        model_sha256=bench_plan.model.sha256,
        params=params,
        vkrama_version=__version__,
        model=model_facts(bench_plan.model),
        token=bench_plan.token,
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


def _image(
    engine: Engine | None,
    settings: Settings,
    backend: str,
    known: dict[str, tuple[str, dict[str, str]]],
    on_progress: Reporter,
) -> str:
    from vkrama import images

    if engine is None:
        return images.image_ref(backend)
    ref = images.image_ref(backend)
    if ref not in known:
        found = images.ensure(engine, backend, settings, on_progress=on_progress)
        ref = found.ref
        known[ref] = (found.id, dict(found.provenance))
    return ref


def _unavailable(backend: str, driver: str | None, reason: str) -> CellResult:
    return CellResult(
        backend=backend,
        driver=driver,
        device="-",
        status=CellStatus.FAILED,
        reason=UNAVAILABLE + reason,
    )


def _usage(message: str, hint: str) -> VkramaError:
    return VkramaError(message, hint=hint, status=ExitStatus.USAGE)
