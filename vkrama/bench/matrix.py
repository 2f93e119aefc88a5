"""Which cells a bench request asks for on this host: backends × Vulkan drivers × GPU sets.

Stage: bench (request + HardwareProfile ─► the `Choice`s to run, and the asked-for ones
that cannot run here, as unavailable cells with the reason). Pure: reads the profile it is
given, never the host; never prints. `session.prepare` plans a container for each choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vkrama.bench import plan as planning
from vkrama.bench import serving
from vkrama.errors import ExitStatus, VkramaError
from vkrama.results.records import CellResult, CellStatus

if TYPE_CHECKING:
    from vkrama.backends import Choice, GpuSelection
    from vkrama.hardware import HardwareProfile


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
    tuned: bool = False  # each cell at the flags `vkrama tune` found for its stack
    check: bool = True  # the output check first, for stacks not yet checked (`bench.check`)
    # bench --rpc: ggml RPC workers (HOST:PORT) to run one split cell over, beside the local
    # cells; its leader is the cpu image, every layer on the workers.
    rpc: tuple[str, ...] = ()


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
        if not request.every:
            # The SYCL CPU device tests the oneapi image (~1.5 GB to build) on the CPU: a
            # run asks for it by name (--backend oneapi) or with --all.
            found = [c for c in found if not backends.is_test_device(c.backend, c.driver)]
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
            # The cell's status already says "unavailable": keep the reason alone.
            why = error.why if isinstance(error, backends.Unavailable) else error.message
            unavailable.append(unavailable_cell(backend, driver, why))
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


def unavailable_cell(backend: str, driver: str | None, reason: str) -> CellResult:
    """A requested cell that cannot run here, stored unavailable with the reason."""
    return CellResult(
        backend=backend, driver=driver, device="-", status=CellStatus.UNAVAILABLE, reason=reason
    )


def _usage(message: str, hint: str) -> VkramaError:
    return VkramaError(message, hint=hint, status=ExitStatus.USAGE)
