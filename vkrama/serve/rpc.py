"""ggml's RPC: a worker (`rpc-server` exposing this host's devices) and the addresses a
leader (`serve --rpc`) spreads a model over.

Stage: serve. `plan_worker` is pure (the --dry-run prints its spec); `prepare_worker`
resolves the backend's image like serve does; `wait_answering` and `check_reachable` only
open TCP connections (`workers` starts one). Must not print or import click.

The RPC protocol has no authentication and no encryption (llama.cpp's README says never to
expose it to an open network): a worker binds loopback unless told otherwise, and a
non-loopback bind is only done when asked for by address, with a warning the CLI prints.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vkrama import llama_flags
from vkrama.backends import compile_cache
from vkrama.engine.spec import ContainerSpec, Mount
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Reporter, Waiting
from vkrama.results.records import RpcWorker
from vkrama.serve.containers import WORKER as WORKER_ROLE
from vkrama.serve.plan import device_labels, locked_down

if TYPE_CHECKING:
    from vkrama.backends import Choice, GpuSelection
    from vkrama.config import Settings
    from vkrama.engine import Engine

# rpc-server's own default port (tools/rpc/rpc-server.cpp).
DEFAULT_PORT = 50052
CACHE_TARGET = f"{compile_cache.CONTAINER_ROOT}/rpc"
# The provenance key an image with the RPC module records (containerfiles/rpc.sh).
PROTOCOL_KEY = "rpc_protocol"


@dataclass(frozen=True)
class Endpoint:
    """One RPC worker address, as llama.cpp's `--rpc host:port` takes it."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """One `HOST:PORT` (`[::1]:50052` for IPv6): ValueError says what is wrong with it."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text.strip()!r} is not HOST:PORT with a port in 1-65535")
    try:
        socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ValueError(f"host {host!r} does not resolve") from None
    return Endpoint(host, int(port))


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """`--rpc HOST:PORT,...`: each address with a port in 1-65535 and a host that resolves."""
    try:
        found = [parse_endpoint(part) for part in text.split(",")]
    except ValueError as why:
        raise VkramaError(
            f"--rpc {text!r}: {why}",
            hint="e.g. --rpc 127.0.0.1:50052,10.0.0.2:50052 (`vkrama rpc-worker` prints "
            "its address)",
            status=ExitStatus.USAGE,
        ) from None
    if len(set(found)) != len(found):
        raise VkramaError(
            f"--rpc {text!r} names a worker twice",
            hint="each worker once",
            status=ExitStatus.USAGE,
        )
    return tuple(found)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class WorkerRequest:
    """What `vkrama rpc-worker` was asked for, typed."""

    backend: str = "auto"
    gpu: GpuSelection = None
    vk_driver: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    name: str | None = None
    threads: int | None = None  # for a CPU device; rpc-server's default is half the cores


@dataclass(frozen=True)
class PlannedWorker:
    spec: ContainerSpec
    endpoint: Endpoint
    choice: Choice


def prepare_worker(
    settings: Settings, request: WorkerRequest, engine: Engine | None, on_progress: Reporter = NULL
) -> PlannedWorker:
    """The worker's backend chosen as serve chooses one, its image (reused or built, or only
    named when `engine` is None: the --dry-run) and its container spec."""
    from vkrama import backends, hardware, stack
    from vkrama.images import image_ref

    profile = hardware.detect_host(settings)
    backend = "auto" if request.backend == "best" else request.backend
    choice = backends.choose(profile, backend, request.gpu, request.vk_driver)
    if engine is None:
        image = image_ref(choice.backend)
    else:
        images: stack.Images = {}
        image = stack.Fetch(engine).image(settings, choice, images, on_progress)
        require_module(choice.backend, images[image][1] if image in images else {})
    caches = [tensor_cache(settings.home)]
    compiled = compile_cache.for_backend(settings.home, choice.backend, choice.driver)
    if compiled is not None:
        caches.append(compiled)
    if engine is not None:
        for cache in caches:
            compile_cache.ensure(cache)
    return plan_worker(request, choice, image, tuple(caches))


def require_module(backend: str, provenance: dict[str, str]) -> None:
    """IMAGE_UNAVAILABLE unless the image records ggml's RPC module (a worker's rpc-server,
    a leader's `--rpc` both need it)."""
    if PROTOCOL_KEY not in provenance:
        raise VkramaError(
            f"the {backend} image has no RPC backend (built before vkrama shipped it)",
            hint=f"`vkrama images build {backend}` rebuilds it with ggml's RPC module and "
            "rpc-server",
            status=ExitStatus.IMAGE_UNAVAILABLE,
        )


def tensor_cache(home: Path) -> compile_cache.CompileCache:
    """rpc-server's `--cache`: the tensors a leader sent, kept by hash under
    $LLAMA_CACHE/rpc so that a restarted leader does not send the same weights again;
    mounted from $VKRAMA_HOME like the compile caches (writable by the container's user)."""
    return compile_cache.CompileCache(home / "cache" / "rpc", CACHE_TARGET, ("LLAMA_CACHE",))


def plan_worker(
    request: WorkerRequest,
    choice: Choice,
    image: str,
    caches: tuple[compile_cache.CompileCache, ...] = (),
) -> PlannedWorker:
    """rpc-server in the backend's image: the devices and environment serve would give it,
    host networking so that it listens on exactly the address asked for, locked down."""
    endpoint = Endpoint(request.host, request.port)
    command = ["rpc-server", "--host", request.host, "--port", str(request.port), "--cache"]
    if request.threads is not None:
        # rpc-server spells it as llama.cpp's other tools do.
        command += [llama_flags.FLAG["t"].server, str(request.threads)]
    env = dict(choice.env)
    # Mesa and ggml want a writable cache; the root filesystem is read-only.
    env.setdefault("XDG_CACHE_HOME", "/tmp/.cache")
    mounts = tuple(Mount(c.host_dir, c.target, read_only=False) for c in caches)
    for cache in caches:
        env.update(cache.env)
    name = request.name or f"vkrama-rpc-{choice.backend}-{request.port}"
    labels = {
        "vkrama.role": WORKER_ROLE,
        "vkrama.model": "-",
        **device_labels(choice),
        "vkrama.url": f"rpc://{endpoint}",
    }
    spec = locked_down(
        choice,
        image=image,
        command=tuple(command),
        name=name,
        labels=labels,
        env=env,
        mounts=mounts,
        # rpc-server binds the address it is given: the host's own, not a published port.
        network="host",
        tmpfs=("/tmp",),
    )
    return PlannedWorker(spec, endpoint, choice)


def check_port_free(host: str, port: int) -> None:
    """PORT_IN_USE before a worker is started on a taken address."""
    from vkrama.serve.plan import pick_port

    pick_port(host, port)


def answers(endpoint: Endpoint, timeout: float = 1.0) -> bool:
    """Whether something accepts a TCP connection there (an unspecified bind: loopback)."""
    host = endpoint.host
    if host in ("0.0.0.0", "::", ""):
        host = "::1" if host == "::" else "127.0.0.1"
    try:
        with socket.create_connection((host, endpoint.port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_answering(
    endpoint: Endpoint,
    timeout: float,
    is_running: Callable[[], bool],
    on_progress: Reporter = NULL,
    what: str = "",
) -> float:
    """Seconds until the worker accepts connections: rpc-server listens only once its
    devices are up. TIMEOUT, or CONTAINER_EXITED when it dies first."""
    started = time.monotonic()
    label = what or f"waiting for rpc-server at {endpoint}"
    try:
        while True:
            waited = time.monotonic() - started
            if answers(endpoint):
                return waited
            if not is_running():
                raise VkramaError(
                    f"rpc-server at {endpoint} exited before it listened",
                    hint="its last log lines are above",
                    status=ExitStatus.CONTAINER_EXITED,
                )
            if waited > timeout:
                raise VkramaError(
                    f"rpc-server at {endpoint} did not listen within {timeout:.0f} s",
                    hint="raise --timeout; `vkrama logs NAME` shows what it is doing",
                    status=ExitStatus.TIMEOUT,
                )
            on_progress(Waiting(label, waited))
            time.sleep(0.2)
    finally:
        on_progress(Waiting(label, time.monotonic() - started, done=True))


def check_reachable(endpoints: Sequence[Endpoint]) -> None:
    """Every worker accepts a connection, or one NETWORK error naming those that do not."""
    missing = [str(e) for e in endpoints if not answers(e, timeout=3.0)]
    if missing:
        raise VkramaError(
            f"RPC worker{'s' if len(missing) > 1 else ''} not reachable: {', '.join(missing)}",
            hint="start one there with `vkrama rpc-worker --port PORT` (`vkrama ps` lists "
            "this host's), or fix --rpc",
            status=ExitStatus.NETWORK,
        )


def describe(engine: Engine | None, endpoints: Sequence[Endpoint]) -> tuple[RpcWorker, ...]:
    """What each worker is, as it says itself: a `vkrama rpc-worker` container on this
    host carries its backend, driver and device in its labels (found by the address it
    listens on); any other worker (another host's, a hand-started rpc-server) is unknown.
    Without an engine (the --dry-run) every worker is unknown."""
    listening: dict[str, dict[str, str]] = {}
    if engine is not None:
        for container in engine.containers({"vkrama.role": WORKER_ROLE}):
            url = container.labels.get("vkrama.url", "")
            if url.startswith("rpc://") and container.state == "running":
                listening[url.removeprefix("rpc://")] = dict(container.labels)
    found = []
    for endpoint in endpoints:
        labels = listening.get(str(endpoint))
        if labels is None and is_loopback(endpoint.host):
            # A worker bound to every address (--host 0.0.0.0) answers on loopback too.
            for unspecified in ("0.0.0.0", "[::]"):
                labels = labels or listening.get(f"{unspecified}:{endpoint.port}")
        if labels is None:
            found.append(RpcWorker(str(endpoint)))
            continue
        found.append(
            RpcWorker(
                str(endpoint),
                labels.get("vkrama.backend", "unknown"),
                labels.get("vkrama.driver") or None,
                labels.get("vkrama.device", "unknown"),
            )
        )
    return tuple(found)
