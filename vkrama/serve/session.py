"""The serve pipeline end to end: from a model reference to a server that answers.

Stage: runs `vkrama.stack.resolve` (store ─► backends ─► images) ─► planning.plan ─► engine.run
─► planning.wait_ready. `plan` is the --dry-run, `prepare` the real thing.
Must not print: steps and waiting are reported to a `Reporter`.
Never leaves a container behind when a server fails to become ready. Servers already
running are found and stopped by `vkrama.serve.containers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vkrama import stack
from vkrama.config import Settings
from vkrama.engine.spec import ContainerSpec
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Reporter, Step, Waiting
from vkrama.serve import plan as planning
from vkrama.serve import ready, warm
from vkrama.serve.containers import start_until
from vkrama.serve.plan import ServeRequest

if TYPE_CHECKING:
    from vkrama.backends import Choice
    from vkrama.engine import Engine
    from vkrama.hardware import HardwareProfile
    from vkrama.store import LocalModel


@dataclass(frozen=True)
class Planned:
    """A serve container ready to start (or to print, under --dry-run)."""

    spec: ContainerSpec
    url: str
    alias: str
    api_key: str | None = field(default=None, repr=False)
    # What the plan was made from: the deploy generators need the backend's GPU kind and
    # the model's size and source, which the container spec does not say.
    choice: Choice | None = None
    model: LocalModel | None = None


@dataclass(frozen=True)
class Running:
    """A started serve container that answered as ready."""

    id: str
    name: str
    url: str
    alias: str
    ready_s: float  # until it answered
    warmed: warm.Warmed | None = None  # the warm-up after it answered (see serve.warm)


def plan(settings: Settings, request: ServeRequest, on_progress: Reporter = NULL) -> Planned:
    """The --dry-run: nothing is pulled, built or bound; the image is named, not checked, and
    a given port is shown unchecked (`auto` still picks a free one, so the printed command
    runs)."""
    port = planning.pick_port(request.host, "auto") if request.port == "auto" else int(request.port)
    return _prepare(settings, request, stack.PLAN, port, on_progress)


def prepare(
    settings: Settings, request: ServeRequest, engine: Engine, on_progress: Reporter = NULL
) -> Planned:
    """Resolve model, device and image (pulled or built), then plan.

    `on_progress` gets the steps, the model download and the image build as events."""
    if request.rpc:
        from vkrama.serve import rpc

        # Every worker answers before a model is read or an image built: one error names
        # those that do not.
        rpc.check_reachable(rpc.parse_endpoints(",".join(request.rpc)))
    # The port is checked before anything is pulled or built, so a busy port fails fast.
    port = planning.pick_port(request.host, request.port)
    return _prepare(settings, request, stack.Fetch(engine), port, on_progress)


def _prepare(
    settings: Settings,
    request: ServeRequest,
    supply: stack.Supply,
    port: int,
    on_progress: Reporter,
) -> Planned:
    api_key = read_api_key(request.api_key_file) if request.api_key_file else None

    tuned: list[tuple[str, ...]] = []  # llama-server flags of a tuned `--backend best`
    switches: dict[str, str] = {}  # and its environment switches

    def choose(model: LocalModel, profile: HardwareProfile) -> list[Choice]:
        choice, flags, env = _choose(settings, request, model, profile, on_progress)
        tuned.append(flags)
        switches.update(env)
        chosen = f"backend {choice.backend}{f' ({choice.driver})' if choice.driver else ''}: "
        # A backend vkrama picked (auto, best) explains itself; one the user named needs none.
        on_progress(Step(chosen + choice.reason, detail=request.backend not in ("auto", "best")))
        return [choice]

    resolution = stack.resolve(settings, request.model, choose, supply, on_progress)
    if resolution.failed:
        raise resolution.failed[0][1]
    ready = resolution.stacks[0]
    model, choice = resolution.model, ready.choice
    if tuned and tuned[0]:
        # The user's own llama-server arguments come last, so theirs win over the tuned.
        request = replace(request, extra_args=(*tuned[0], *request.extra_args))
    resolved = planning.Resolved(model, choice, ready.image, port, api_key, ready.cache)
    spec = planning.plan(request, resolved)
    if switches:  # the tuned stack's own switches (backends.env_switches) go in its env
        spec = replace(spec, env={**switches, **spec.env})
    return Planned(
        spec,
        planning.base_url(request.host, port),
        spec.labels["vkrama.alias"],
        api_key,
        choice,
        model,
    )


def _choose(
    settings: Settings,
    request: ServeRequest,
    model: LocalModel,
    profile: HardwareProfile,
    on_progress: Reporter,
) -> tuple[Choice, tuple[str, ...], dict[str, str]]:
    """The backend to serve with, and the llama-server flags `vkrama tune` found for it
    (only for `--backend best` over tuned stacks; else none)."""
    from vkrama import backends

    backend, driver = request.backend, request.vk_driver
    if request.rpc and backend == "auto":
        # The workers hold the model: the leader needs no GPU of its own unless one is named.
        backend = "cpu"
    flags: tuple[str, ...] = ()
    env: dict[str, str] = {}
    if backend == "best":
        one = request.gpu if isinstance(request.gpu, int) else None
        backend, driver, reason, flags, env = _best_cell(settings, request, model, profile, one)
        on_progress(Step(f"--backend best: {reason}"))
    choice = backends.choose(
        profile, backend, request.gpu, driver, split_mode=request.split_mode,
        tensor_split=request.tensor_split,
    )  # fmt: skip
    return choice, flags, env


def _best_cell(
    settings: Settings,
    request: ServeRequest,
    model: LocalModel,
    profile: HardwareProfile,
    gpu: int | None,
) -> tuple[str, str | None, str, tuple[str, ...], dict[str, str]]:
    """The fastest (backend, driver) for this model and GPU, and its llama-server flags:
    among the stacks `vkrama tune` tuned for the metric when there are any (each at its
    own best flags), else as `vkrama bench` measured them (llama-server's defaults)."""
    from vkrama import results  # only `--backend best` pays for the results store
    from vkrama.results import tunings

    ref, metric = request.model, request.rank_by
    key = profile.gpu_key(gpu)
    ranked = tunings.best(settings, model.sha256, key, metric) if metric in ("pp", "tg") else None
    if ranked is not None:
        winner = ranked.winner
        # A flag the user gave (--ngl, --split-mode) wins over the tuned one: it is dropped.
        given = {f for f, v in (("ngl", request.ngl), ("sm", request.split_mode)) if v is not None}
        flags = winner.server_args_without(given)
        reason = f"{ranked.reason}; llama-server gets {' '.join(flags) or 'its defaults'}"
        if winner.env:
            reason += f", in its environment {' '.join(f'{k}={v}' for k, v in winner.env.items())}"
        return winner.backend, winner.driver, reason, flags, winner.env
    # `tune --for` defaults to pp and `serve --rank-by` to tg: tunings made for the other
    # metric are not used, and that is said.
    elsewhere, switch = "", ""
    tuned_for = []
    if metric in ("pp", "tg"):
        tuned_for = tunings.others(tunings.newest(settings, model.sha256, key), metric)
    if tuned_for:
        switch = f"--rank-by {'pp' if metric == 'tg' else 'tg'} ranks the tunings made for"
        switch += f" {', '.join(tuned_for)}"
        elsewhere = f"no tuning for {metric} ({switch}), so by bench results: "
    try:
        cell = results.best(settings, model.sha256, key, metric)
    except ValueError:
        raise VkramaError(
            f"--rank-by {metric!r} is not a metric",
            hint="tg, pp, capacity (or goodput: the highest rate within `vkrama bench --serve "
            "--slo`), joules (the least J/token in generation), or "
            "serve:tps@N (total tokens/s of `vkrama bench --serve` at N clients)",
            status=ExitStatus.USAGE,
        ) from None
    if cell is None and metric == results.JOULES:
        raise VkramaError(
            f"no stored generation (tg) result of {ref} on this machine has a J/token figure "
            "from a stack whose output check said ok",
            hint=f"run `vkrama bench {ref}` where `vkrama doctor` lists a power counter, with "
            "tests long enough for it (2.5 s: raise -r or -n), or pick --backend yourself",
            status=ExitStatus.NO_POWER_COUNTER,
        )
    if cell is None:
        serve = results.SERVE_METRIC.fullmatch(metric)
        how = f"bench --serve --concurrency {serve.group(1)}" if serve else "bench"
        if metric in ("goodput", "capacity", results.CAPACITY):
            how = "bench --serve --sweep --slo ttft_p90=500ms,itl_p90=50ms"
        raise VkramaError(
            f"no bench results for {ref} on this machine yet"
            + (f" (none measured {metric})" if serve or how != "bench" else ""),
            hint=f"run `vkrama {how} {ref}` first, or pick --backend yourself"
            + (f"; {switch}" if switch else ""),
            status=ExitStatus.NOT_FOUND,
        )
    return cell.backend, cell.driver, elsewhere + cell.reason, (), {}


def read_api_key(path: Path) -> str:
    """The first line of the key file; its content is never echoed."""
    try:
        key = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise VkramaError(
            f"cannot read API key file {path}: {exc.strerror}",
            hint="--api-key-file wants a file whose first line is the key",
            status=ExitStatus.USAGE,
        ) from None
    if not key or not key[0].strip():
        raise VkramaError(
            f"API key file {path} is empty",
            hint="write the key on its first line",
            status=ExitStatus.USAGE,
        )
    return key[0].strip()


def launch(
    engine: Engine,
    planned: Planned,
    timeout: float,
    on_progress: Reporter = NULL,
) -> Running:
    """Start the planned container and wait until it serves; on failure remove it and raise
    `ServerFailed` (TIMEOUT or CONTAINER_EXITED) carrying its last log lines."""

    def wait(container: str) -> tuple[float, warm.Warmed]:
        waited = ready.wait_ready(
            planned.url,
            planned.alias,
            timeout,
            is_running=lambda: engine.alive(container),
            on_progress=on_progress,
            api_key=planned.api_key,
            what=f"starting {planned.spec.name}",
        )
        # Ready means warm: the first chat must not be the one that compiles.
        return waited, _warm_up(engine, container, planned, timeout, on_progress)

    secrets = {s.name: planned.api_key or "" for s in planned.spec.secrets}
    container, (waited, warmed) = start_until(engine, planned.spec, wait, secrets)
    name = planned.spec.name or container[:12]
    return Running(container, name, planned.url, planned.alias, waited, warmed)


def _warm_up(
    engine: Engine, container: str, planned: Planned, timeout: float, on_progress: Reporter
) -> warm.Warmed:
    """`warm.warm_up` with a spinner; a server that died meanwhile is CONTAINER_EXITED."""
    what = f"warming {planned.spec.name} up"
    on_progress(Waiting(what, 0.0))
    try:
        gpu = planned.choice is None or warm.compiles_on_first_use(planned.choice.backend)
        return warm.warm_up(planned.url, planned.spec.command, timeout, planned.api_key, gpu)
    except VkramaError:
        if engine.alive(container):
            raise
        raise VkramaError(
            "llama-server exited while it was warmed up",
            hint="its last log lines are above; `--backend cpu` rules out the GPU",
            status=ExitStatus.CONTAINER_EXITED,
        ) from None
    finally:
        on_progress(Waiting(what, 0.0, done=True))
