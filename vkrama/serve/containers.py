"""Serve containers (llama-server, RPC workers): start one until it serves, and list,
find, follow and stop those that exist by their labels.

Stage: serve, around engine.run. Reads the `vkrama.*` labels `serve.plan` and `serve.rpc`
write (no state file) and talks to podman only through the `Engine`. Never leaves a
container behind that did not come up. Must not print.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from secrets import token_hex
from typing import TYPE_CHECKING, TypeVar

from vkrama.engine.spec import LAUNCH_LABEL, ContainerSpec
from vkrama.errors import ExitStatus, VkramaError
from vkrama.serve.plan import ROLE

if TYPE_CHECKING:
    from vkrama.engine import ContainerSummary, Engine

from vkrama.engine.records import ContainerStatus

# How much of a failed server's log the user gets to see.
LOG_TAIL_LINES = 20
T = TypeVar("T")

# The role of `vkrama rpc-worker`'s containers (serve.rpc), listed and stopped as servers.
WORKER = "rpc-worker"


def log_tail(engine: Engine, container: str, lines: int) -> list[str]:
    """The last `lines` lines of a container's log ([] once it is gone)."""
    try:
        return list(engine.logs(container, tail=lines))
    except VkramaError as error:
        if error.status == ExitStatus.NOT_FOUND:  # removed meanwhile (`vkrama stop`)
            return []
        raise


class ContainerGone(Exception):
    """The container was removed while vkrama was following it."""


def follow_log(engine: Engine, container: str) -> Iterator[str]:
    """The container's log as it grows, until it exits; ContainerGone if it is removed."""
    try:
        yield from engine.logs(container, follow=True)
    except VkramaError as error:
        if error.status == ExitStatus.NOT_FOUND or exit_code(engine, container) is None:
            raise ContainerGone(container) from None
        raise


def exit_code(engine: Engine, container: str) -> int | None:
    """The exit code of a stopped container; None when it no longer exists."""
    try:
        return engine.state(container).exit_code
    except VkramaError as error:
        if error.status == ExitStatus.NOT_FOUND:
            return None
        raise


@dataclass(frozen=True)
class ServerRow:
    """One serve container as `vkrama ps` shows it, read from its labels."""

    name: str
    id: str
    model: str
    alias: str
    backend: str
    driver: str
    device: str
    url: str
    state: ContainerStatus
    started_at: datetime | None

    def uptime_s(self, now: datetime | None = None) -> float | None:
        if self.started_at is None or self.state != ContainerStatus.RUNNING:
            return None
        return ((now or datetime.now(timezone.utc)) - self.started_at).total_seconds()

    def json_fields(self) -> dict[str, object]:
        """What `ps --json` says beyond the fields (cli.console.to_json): no driver is
        null, and the uptime is rounded to a tenth of a second."""
        uptime = self.uptime_s()
        return {
            "driver": self.driver or None,
            "uptime_s": None if uptime is None else round(uptime, 1),
        }


def list_servers(engine: Engine) -> list[ServerRow]:
    """Every vkrama serve container, running or not, by name."""
    # RPC workers (`vkrama rpc-worker`) are listed and stopped like servers.
    found = [*engine.containers({"vkrama.role": ROLE}), *engine.containers({"vkrama.role": WORKER})]
    rows = [_row(c) for c in found]
    return sorted(rows, key=lambda row: row.name)


def _row(summary: ContainerSummary) -> ServerRow:
    labels = summary.labels
    return ServerRow(
        name=summary.name,
        id=summary.id,
        model=labels.get("vkrama.model", "?"),
        alias=labels.get("vkrama.alias", ""),
        backend=labels.get("vkrama.backend", "?"),
        driver=labels.get("vkrama.driver", ""),
        device=labels.get("vkrama.device", ""),
        url=labels.get("vkrama.url") or _url_of_port(labels.get("vkrama.port")),
        state=summary.state,
        started_at=summary.started_at,
    )


def _url_of_port(port: str | None) -> str:
    """Kubernetes label values cannot hold a URL: pods from `--generate kube` carry the
    host port they publish on loopback instead."""
    return f"http://127.0.0.1:{port}" if port and port.isdigit() else ""


def find_server(engine: Engine, name: str) -> ServerRow:
    """The serve container called `name` (or whose id starts with it)."""
    for row in list_servers(engine):
        if name in (row.name, row.id) or (len(name) >= 6 and row.id.startswith(name)):
            return row
    raise VkramaError(
        f"no vkrama server named {name!r}",
        hint="`vkrama ps` lists the servers",
        status=ExitStatus.NOT_FOUND,
    )


def servers_of(engine: Engine, model_path: Path) -> list[ServerRow]:
    """The serve containers of one model file, in any state (each may be started again)."""
    found = engine.containers({"vkrama.role": ROLE, "vkrama.model_path": str(model_path)})
    return sorted((_row(c) for c in found), key=lambda row: row.name)


def find_running(engine: Engine, model_sha256: str) -> ServerRow | None:
    """A running server of the model with this digest, if there is one."""
    for summary in engine.containers({"vkrama.role": ROLE, "vkrama.model_sha256": model_sha256}):
        if summary.state == ContainerStatus.RUNNING:
            return _row(summary)
    return None


def stop_targets(engine: Engine, names: tuple[str, ...], every: bool) -> list[ServerRow]:
    """The servers `vkrama stop` removes: the named ones (all with `every`). Unknown names
    fail here, before anything is stopped."""
    return list_servers(engine) if every else [find_server(engine, n) for n in names]


def stop(engine: Engine, server: ServerRow) -> None:
    """Stop and remove a server: force-remove stops it (SIGTERM, then SIGKILL)."""
    engine.remove(server.id)


def stop_command(server: ServerRow) -> list[str]:
    """The podman command `stop` amounts to, for --dry-run."""
    return ["podman", "rm", "--force", "--volumes", server.name]


class ServerFailed(VkramaError):
    """A server that never became ready; carries the last lines of its log."""

    def __init__(self, error: VkramaError, log_tail: list[str]) -> None:
        super().__init__(error.message, hint=error.hint, status=error.status)
        self.log_tail = log_tail


def start_until(
    engine: Engine,
    spec: ContainerSpec,
    wait: Callable[[str], T],
    secret_values: Mapping[str, str] | None = None,
) -> tuple[str, T]:
    """Start `spec` and `wait(container)` until it serves (a server, an RPC worker); a
    VkramaError from the wait removes the container and becomes `ServerFailed` with its
    last log lines, and an interrupt anywhere removes it too."""
    # One label marks this start's container, so that an interrupt anywhere below (even
    # before `run` has returned its id) finds and removes it.
    launch = token_hex(8)
    spec = replace(spec, labels={**spec.labels, LAUNCH_LABEL: launch})
    try:
        container = engine.run(spec, secret_values)
    except BaseException:
        engine.remove_launched(launch)
        raise
    try:
        return container, wait(container)
    except VkramaError as error:
        tail = log_tail(engine, container, LOG_TAIL_LINES)
        engine.remove(container)
        raise ServerFailed(error, tail) from None
    except BaseException:
        # Ctrl-C or SIGTERM while waiting: the half-started server goes too.
        engine.remove_launched(launch)
        raise
