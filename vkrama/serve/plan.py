"""Plan a llama-server container and pick its host port.

Stage: serve.plan ─► ContainerSpec (pure, so --dry-run can print it). `plan` must not
touch the system; `pick_port` only binds a probe socket. Nothing here prints or imports
podman-py.
"""

from __future__ import annotations

import errno
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex
from typing import TYPE_CHECKING, Any

from vkrama.backends import ALL_LAYERS
from vkrama.backends.compile_cache import CompileCache
from vkrama.engine.spec import ContainerSpec, Mount, PortMapping, SecretFile
from vkrama.errors import ExitStatus, VkramaError
from vkrama.llama_flags import FLAG

if TYPE_CHECKING:
    from vkrama.backends import Choice, GpuSelection
    from vkrama.store import LocalModel

# llama-server listens on one fixed port inside every container; only the published host
# port varies, so the command line never depends on the host.
CONTAINER_PORT = 8080
MODEL_DIR = "/models"
# The images' non-root user ("llama"); numeric so it need not be looked up in the image.
CONTAINER_USER = "1000:1000"
# The API key reaches llama-server as a podman secret mounted here (--api-key-file): an
# environment variable would show in `podman inspect`, an argument in `ps`.
SECRETS_DIR = "/run/secrets"
API_KEY_FILE = f"{SECRETS_DIR}/api-key"
# llama-server ignores SIGTERM while it loads (PID 1 has no default action), so podman
# would wait its 10 s before SIGKILL; a second is plenty once the handler is installed.
STOP_TIMEOUT_S = 1
ROLE = "serve"


@dataclass(frozen=True)
class ServeRequest:
    """What the user asked `vkrama serve` (or `run`) for, typed; the CLI builds it from flags.
    `session.prepare` resolves it (`Resolved`) and `plan` reads both, so no field is copied."""

    model: str  # a reference or a path
    backend: str = "auto"  # or "best", or a backend's name
    gpu: GpuSelection = None  # several: one model split over them
    split_mode: str | None = None
    tensor_split: tuple[float, ...] = ()
    vk_driver: str | None = None
    port: int | str = 8080  # or "auto"
    host: str = "127.0.0.1"
    name: str | None = None
    ctx_size: int | None = None
    ngl: int | None = None
    parallel: int | None = None
    alias: str | None = None
    api_key_file: Path | None = None
    extra_args: tuple[str, ...] = ()
    # What `--backend best` ranks by: "tg" (llama-bench generation t/s), "pp", or
    # "serve:tps@N" (a serving bench's total output tokens/s at N clients).
    rank_by: str = "tg"
    timeout: float | None = None  # seconds until ready; None: settings serve.timeout
    # ggml RPC workers (`vkrama rpc-worker`) as HOST:PORT, checked by `serve.rpc`: the
    # model's layers are spread over their devices (and the local backend's GPUs, if any).
    rpc: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resolved:
    """A request resolved to a model file, a device, an image and a free host port."""

    model: LocalModel
    choice: Choice
    image: str
    port: int
    api_key: str | None = field(default=None, repr=False)
    # Where the backend's compiled GPU code outlives the container (see compile_cache).
    compile_cache: CompileCache | None = None


def plan(request: ServeRequest, resolved: Resolved) -> ContainerSpec:
    """The llama-server container for `request`: locked down, labelled, model mounted ro."""
    model, choice, port = resolved.model, resolved.choice, resolved.port
    alias = check_alias(request.alias) if request.alias is not None else default_alias(model.name)
    files = model.files or (model.path,)
    mounts = tuple(Mount(Path(f), f"{MODEL_DIR}/{Path(f).name}") for f in files)
    # Over RPC every layer goes to the workers' devices, whatever the local backend.
    local_only = choice.backend == "cpu" and not request.rpc
    ngl = request.ngl if request.ngl is not None else (0 if local_only else ALL_LAYERS)
    # A leader reaches workers on this host's loopback too, so it shares the host's
    # network and listens on the asked address itself; otherwise the port is published.
    listen = (request.host, port) if request.rpc else ("0.0.0.0", CONTAINER_PORT)
    command = [
        "llama-server",
        "--model", f"{MODEL_DIR}/{Path(model.path).name}",
        "--host", listen[0],
        "--port", str(listen[1]),
        "--alias", alias,
        FLAG["ngl"].server, str(ngl),
    ]  # fmt: skip
    if request.rpc:
        command += [FLAG["rpc"].server, ",".join(request.rpc)]
    if choice.split is not None:
        command += list(choice.split.server_args())
    if request.ctx_size is not None:
        command += ["--ctx-size", str(request.ctx_size)]
    if request.parallel is not None:
        command += ["--parallel", str(request.parallel)]
    if resolved.api_key:
        command += ["--api-key-file", API_KEY_FILE]
    command += list(request.extra_args)
    env = dict(choice.env)
    # Mesa and ggml want a writable cache; the root filesystem is read-only.
    env.setdefault("XDG_CACHE_HOME", "/tmp/.cache")
    if resolved.compile_cache is not None:
        cache = resolved.compile_cache
        mounts += (Mount(cache.host_dir, cache.target, read_only=False),)
        env.update(cache.env)
    name = request.name or default_name(alias, port)
    secrets: tuple[SecretFile, ...] = ()
    tmpfs: tuple[str, ...] = ("/tmp",)
    if resolved.api_key:
        uid, gid = (int(part) for part in CONTAINER_USER.split(":"))
        # Unique per start: two serves never share (or remove) each other's secret.
        secret_name = f"{name}-api-key-{token_hex(4)}"
        secrets = (SecretFile(secret_name, API_KEY_FILE, uid, gid),)
        tmpfs += (SECRETS_DIR,)  # the read-only root cannot take the mount point
    url = base_url(request.host, port)
    labels = {
        "vkrama.role": ROLE,
        "vkrama.model": model.name,
        "vkrama.alias": alias,
        **device_labels(choice),
        "vkrama.url": url,
    }
    if request.rpc:
        labels["vkrama.rpc"] = ",".join(request.rpc)
    # The host file served: `vkrama rm` finds the servers that would lose it by this.
    labels["vkrama.model_path"] = str(model.path)
    if getattr(model, "sha256", None):
        labels["vkrama.model_sha256"] = model.sha256
    return locked_down(
        choice,
        image=resolved.image,
        command=tuple(command),
        name=name,
        labels=labels,
        env=env,
        mounts=mounts,
        ports=() if request.rpc else (PortMapping(CONTAINER_PORT, port, request.host),),
        network="host" if request.rpc else None,
        tmpfs=tmpfs,
        secrets=secrets,
    )


def locked_down(choice: Choice, **fields: Any) -> ContainerSpec:
    """A container with `choice`'s devices and serve's secure defaults: the image's
    non-root user, no capabilities, no new privileges, a read-only root, a quick stop."""
    return ContainerSpec(
        devices=tuple(choice.devices),
        group_add=tuple(choice.group_add),
        user=CONTAINER_USER,
        cap_drop_all=True,
        no_new_privileges=True,
        read_only_rootfs=True,
        stop_timeout=STOP_TIMEOUT_S,
        **fields,
    )


def device_labels(choice: Choice) -> dict[str, str]:
    """What `vkrama ps` says a container runs on: backend, device, driver, GPU indices."""
    labels = {"vkrama.backend": choice.backend, "vkrama.device": choice.device_label}
    if choice.driver:
        labels["vkrama.driver"] = choice.driver
    if choice.gpu_indices:
        labels["vkrama.gpus"] = ",".join(str(i) for i in choice.gpu_indices)
    return labels


def default_alias(model_name: str) -> str:
    """The name clients pass as `model`: the model's name without path or .gguf suffix.

    llama-server reads `--alias a,b` as two aliases, so a comma becomes `_`: the alias
    must come back whole from /v1/models, or readiness never sees it."""
    name = model_name.rsplit("/", 1)[-1]
    return name.removesuffix(".gguf").replace(",", "_") or "model"


def check_alias(alias: str) -> str:
    """An alias the user chose must reach llama-server as one name (see `default_alias`)."""
    if "," in alias or not alias.strip():
        raise VkramaError(
            f"--alias {alias!r} is not one model name (llama-server splits it at commas)",
            hint="pick a name without commas, e.g. " + repr(default_alias(alias) or "model"),
            status=ExitStatus.USAGE,
        )
    return alias


def default_name(alias: str, port: int) -> str:
    """A container name that says what runs and is unique per host port."""
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", alias).strip("-.").lower() or "model"
    return f"vkrama-{slug[:40]}-{port}"


def base_url(host: str, port: int) -> str:
    """Where a client on this machine reaches the server (wildcards mean loopback works)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def pick_port(host: str, wanted: int | str) -> int:
    """`wanted` if it is free on `host`, a free one for "auto"; a busy port is an error."""
    auto = wanted == "auto"
    port = 0 if auto else int(wanted)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: a port whose last connection sits in TIME_WAIT is free to podman.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or "0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise VkramaError(
                    f"port {port} on {host} is already in use",
                    hint="pick another with --port N, or let vkrama choose with --port auto",
                    status=ExitStatus.PORT_IN_USE,
                ) from None
            raise VkramaError(
                f"cannot listen on {host}:{port}: {exc.strerror}",
                hint="check --host (an address of this machine) and --port",
                status=ExitStatus.USAGE,
            ) from None
        return int(probe.getsockname()[1])
