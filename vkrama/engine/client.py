"""The podman engine: containers from `ContainerSpec`s, through podman's REST API.

Stage: engine (the only importer of podman-py, with its sibling `engine.images`). It turns
podman-py and transport exceptions into `VkramaError`s at this boundary (engine/errors.py),
labels every container it creates, and never prints. Over 300 lines because every
container call podman-py offers (run, wait, logs, state, secrets) is one method here.
"""

from __future__ import annotations

import collections
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from podman import PodmanClient

from vkrama.config import Settings
from vkrama.engine import signals
from vkrama.engine.errors import translate_errors
from vkrama.engine.records import (
    Completed,
    ContainerState,
    ContainerStatus,
    ContainerSummary,
    EngineInfo,
)
from vkrama.engine.socket import Endpoint, discover, keep_alive, ping, start_private_service
from vkrama.engine.spec import LAUNCH_LABEL, VERSION_LABEL, ContainerSpec
from vkrama.errors import ExitStatus, VkramaError

NEVER_STARTED_S = 30.0  # a started container still "created" after this long never will be
STARTING_POLL_S = 0.05
RECONNECT_FIRST_S = 0.05  # the first pause before pinging a lost service again; doubles
RECONNECT_MOST_S = 1.0  # ... up to this pause
T = TypeVar("T")
FOLLOW_END_S = 5.0  # how long a log follower may lag behind the container's exit


class Podman:
    """A connected podman service: implements `engine.protocol.Engine`."""

    def __init__(self, endpoint: Endpoint, reconnect_s: float = 60.0) -> None:
        self.endpoint = endpoint
        self.reconnect_s = reconnect_s  # settings engine.reconnect
        self.client = PodmanClient(base_url=endpoint.url, timeout=None)
        keep_alive(endpoint)

    # -- a lost service ------------------------------------------------------------------
    def call(
        self, what: str, request: Callable[[], T], again: Callable[[], None] | None = None
    ) -> T:
        """`request()` with its errors translated; when podman's API service is gone (killed,
        restarted, a socket systemd brings back), wait for it to answer again for up to
        `reconnect_s` and repeat the request, `again()` first (to clear what a request that
        may have half-happened left). Containers run on under conmon while the service is
        away, so a run goes on with the container it started rather than failing it. Every
        container call here and every image call (`engine.images`) goes through it."""
        deadline: float | None = None
        while True:
            try:
                with translate_errors(what):
                    return request()
            except VkramaError as error:
                if error.status != ExitStatus.ENGINE_UNAVAILABLE or self.reconnect_s <= 0:
                    raise
                if deadline is None:
                    deadline = time.monotonic() + self.reconnect_s
                if not self._service_back(deadline):
                    raise VkramaError(
                        f"{what}: podman did not answer again within {self.reconnect_s:g} s "
                        "(settings engine.reconnect)",
                        hint="is the podman service running? `podman info` checks it; "
                        "VKRAMA_ENGINE_RECONNECT=SECONDS waits longer",
                        status=ExitStatus.ENGINE_UNAVAILABLE,
                    ) from None
                if again is not None:
                    again()

    def _service_back(self, deadline: float) -> bool:
        """Ping the service until it answers (True) or `deadline` passes (False), with a
        doubling pause. vkrama's own private service is started again: nobody else will."""
        pause = RECONNECT_FIRST_S
        while True:
            if self.endpoint.idle_timeout is not None:
                with contextlib.suppress(VkramaError):
                    start_private_service(
                        Path(self.endpoint.path).parent, self.endpoint.idle_timeout
                    )
            if ping(self.endpoint.url, timeout=min(1.0, max(0.1, deadline - time.monotonic()))):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, RECONNECT_MOST_S)

    # -- service -------------------------------------------------------------------------
    def info(self) -> EngineInfo:
        data = self.call("podman info", self.client.info)
        host = data.get("host", {})
        version = data.get("version", {})
        return EngineInfo(
            version=version.get("Version", "?"),
            api_version=version.get("APIVersion", "?"),
            url=self.endpoint.url,
            source=self.endpoint.source,
            started_service=self.endpoint.started,
            oci_runtime=host.get("ociRuntime", {}).get("name", "?"),
            storage_driver=data.get("store", {}).get("graphDriverName", "?"),
            rootless=bool(host.get("security", {}).get("rootless", False)),
        )

    # -- containers ----------------------------------------------------------------------
    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; returns its id. A create the lost service may or
        may not have done is cleared (by its launch label) before it is sent again."""
        body = _json(spec.api_body())

        def post() -> str:
            # Held back until podman answers: an interrupt mid-request would leave the
            # container it goes on to create unknown to our clean-up (engine/signals.py).
            # Held per attempt: never while the service is away.
            with signals.held():
                response = self.client.api.post(
                    "/containers/create", data=body, headers={"content-type": "application/json"}
                )
                response.raise_for_status()
            return str(response.json()["Id"])

        launch = spec.labels.get(LAUNCH_LABEL)
        return self.call(
            f"create container from {spec.image}",
            post,
            again=(lambda: self.remove_launched(launch)) if launch else None,
        )

    def start(self, container: str) -> None:
        self.call(
            f"start container {container[:12]}",
            lambda: self.client.api.post(f"/containers/{container}/start").raise_for_status(),
        )

    def run(self, spec: ContainerSpec, secret_values: Mapping[str, str] | None = None) -> str:
        """Create and start a detached container; removes it again if it cannot start.

        `secret_values` gives each of `spec.secrets` its value. Podman copies a secret into
        the container when it creates it, so the stored secret is removed right after: it
        lives only for the create call and never outlives the container.

        The container is found again by a label unique to this call, not by the id `create`
        returns: a signal that lands while podman creates it (before the id is known)
        must not leave it behind in state `created`.
        """
        launch = spec.labels.get(LAUNCH_LABEL) or secrets.token_hex(8)
        spec = replace(spec, labels={**spec.labels, LAUNCH_LABEL: launch})
        try:
            for secret in spec.secrets:
                self.create_secret(secret.name, (secret_values or {})[secret.name])
            try:
                container = self.create(spec)
            finally:
                for secret in spec.secrets:
                    self.remove_secret(secret.name)
            self.start(container)
        except BaseException:
            self.remove_launched(launch)
            raise
        return container

    def remove_launched(self, launch: str) -> None:
        """Remove the containers of one `run` call, whatever their state."""
        for summary in self.containers({LAUNCH_LABEL: launch}):
            self.remove(summary.id)

    def create_secret(self, name: str, value: str) -> None:
        """Store a podman secret (replacing one of the same name a crash left behind)."""
        self.remove_secret(name)
        self.call(
            f"create secret {name}",
            lambda: self.client.api.post(
                "/secrets/create", params={"name": name}, data=value.encode("utf-8")
            ).raise_for_status(),
        )

    def remove_secret(self, name: str) -> None:
        """Remove a podman secret; one already gone is fine."""

        def delete() -> None:
            response = self.client.api.delete(f"/secrets/{name}")
            if response.status_code not in (200, 204, 404):
                response.raise_for_status()

        with contextlib.suppress(VkramaError):
            self.call(f"remove secret {name}", delete)

    def wait(
        self, container: str, timeout: float | None = None, start_grace: float = NEVER_STARTED_S
    ) -> int:
        """Wait until the container exits; its exit code. Raises TIMEOUT after `timeout` s,
        CONTAINER_EXITED if it is still only "created" after `start_grace` s.

        Podman blocks in its own wait call until the exit: polling the state instead costs
        podman CPU that a benchmark running in the container lacks (~3 % of llama-bench's
        t/s at 10 polls/s on 2 cores) and adds latency after the exit.
        """
        began = time.monotonic()
        while self.state(container).status == ContainerStatus.CREATED:
            if time.monotonic() - began > start_grace:
                # Seen under heavy load: the start call returns but runc never ran the
                # process ("container with given ID already exists" on a retry).
                raise VkramaError(
                    f"container {container[:12]} never started (still created after "
                    f"{start_grace:.0f} s)",
                    hint=f"`podman start -a {container[:12]}` shows the runtime's error",
                    status=ExitStatus.CONTAINER_EXITED,
                )
            time.sleep(STARTING_POLL_S)

        def wait_call() -> Any:
            # Asked again after a lost service: the time left, not the whole timeout.
            left = None if timeout is None else max(0.1, timeout - (time.monotonic() - began))
            response = self.client.api.post(f"/containers/{container}/wait", timeout=left)
            response.raise_for_status()
            return response

        try:
            response = self.call(f"wait for container {container[:12]}", wait_call)
        except VkramaError as error:
            if error.status == ExitStatus.TIMEOUT:
                raise VkramaError(
                    f"container {container[:12]} still running after {timeout:.0f} s",
                    status=ExitStatus.TIMEOUT,
                ) from None
            raise
        return int(response.json())

    def state(self, container: str) -> ContainerState:
        found = self.call(f"inspect container {container[:12]}", lambda: self._get_json(
            f"/containers/{container}/json"))["State"]  # fmt: skip
        return ContainerState(
            ContainerStatus(found.get("Status")),
            int(found.get("ExitCode", 0)),
            int(found.get("Pid") or 0),
        )

    def logs(
        self,
        container: str,
        *,
        stdout: bool = True,
        stderr: bool = True,
        follow: bool = False,
        tail: int | None = None,
    ) -> Iterator[str]:
        """The container's output, line by line: the last `tail` lines, then new ones if `follow`.

        The tail is cut here, not by podman: podman 4.3 counts log records, and programs
        like llama-server write one line as several records, so its tail comes back garbled.
        """
        if tail is None and follow:
            yield from self._follow_logs(container, stdout, stderr, skip=0)
            return
        if tail is None:
            # Read whole, so a lost service's read is repeated from the start, not torn.
            yield from self.call(
                f"logs of {container[:12]}",
                lambda: list(self._log_lines(container, stdout, stderr)),
            )
            return
        lines = self.call(
            f"logs of {container[:12]}", lambda: list(self._log_lines(container, stdout, stderr))
        )
        seen = len(lines)
        kept: collections.deque[str] = collections.deque(lines, maxlen=max(tail, 0))
        yield from kept
        if follow:
            # following replays the log from its start: skip what was already read
            yield from self._follow_logs(container, stdout, stderr, skip=seen)

    def _follow_logs(self, container: str, stdout: bool, stderr: bool, skip: int) -> Iterator[str]:
        """New log lines from line `skip` on, until the container ends. A lost service's
        stream is followed again once it is back, from the first line not yet given."""
        deadline: float | None = None
        while True:
            try:
                for number, line in enumerate(self._log_lines(container, stdout, stderr, True)):
                    if number >= skip:
                        skip = number + 1
                        yield line
                if not self.alive(container):
                    return  # the stream ended with the container
                # A stream that ends while the container runs on: its service went away
                # (and the state call above waited for it to come back). Follow again.
                time.sleep(RECONNECT_FIRST_S)
            except VkramaError as error:
                if error.status != ExitStatus.ENGINE_UNAVAILABLE or self.reconnect_s <= 0:
                    raise
                deadline = deadline or time.monotonic() + self.reconnect_s
                if not self._service_back(deadline):
                    raise

    def alive(self, container: str) -> bool:
        """Running or about to; False once it ended or was removed (`vkrama stop`)."""
        try:
            return self.state(container).status.alive
        except VkramaError as error:
            if error.status == ExitStatus.NOT_FOUND:
                return False
            raise

    def _log_lines(
        self, container: str, stdout: bool, stderr: bool, follow: bool = False
    ) -> Iterator[str]:
        with translate_errors(f"logs of {container[:12]}"):
            handle = self.client.containers.get(container)
            chunks = handle.logs(stdout=stdout, stderr=stderr, stream=follow, follow=follow)
            if isinstance(chunks, bytes):
                chunks = iter([chunks])
            pending = b""
            for chunk in chunks:
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
            if pending:
                yield pending.decode("utf-8", "replace")

    def run_to_completion(
        self,
        spec: ContainerSpec,
        timeout: float | None = None,
        on_running: Callable[[int], None] | None = None,
        on_stdout: Callable[[str], None] | None = None,
    ) -> Completed:
        """Run a container to its end and collect stdout and stderr apart; always removes it.

        `on_running(pid)` gets the host pid of the container's process once it started (0
        when it already ended), for a caller that watches it from outside. `on_stdout(line)`
        gets each stdout line as it arrives (a thread follows the log), for a caller that
        times them: podman 4.3 polls its log file, so a line comes up to ~0.25 s late.
        """
        container = self.run(spec)
        follower = None
        try:
            if on_running is not None:
                on_running(self.state(container).pid)
            if on_stdout is not None:
                follower = threading.Thread(
                    target=self._follow, args=(container, on_stdout), daemon=True
                )
                follower.start()
            exit_code = self.wait(container, timeout)
            if follower is not None:
                follower.join(FOLLOW_END_S)  # the follow ends with the container
            out = "\n".join(self.logs(container, stderr=False))
            err = "\n".join(self.logs(container, stdout=False))
            return Completed(exit_code, out, err)
        finally:
            self.remove(container)

    def _follow(self, container: str, on_line: Callable[[str], None]) -> None:
        with contextlib.suppress(VkramaError):  # timing lines is a witness: never fatal
            for line in self._log_lines(container, True, False, follow=True):
                on_line(line)

    def cpu_seconds(self, container: str) -> float:
        """CPU time the container's processes used so far (its cgroup's counter)."""
        found = self.call(f"stats of {container[:12]}", lambda: self._get_json(
            f"/containers/{container}/stats", {"stream": False}))  # fmt: skip
        usage = found.get("cpu_stats", {}).get("cpu_usage", {})
        return float(usage.get("total_usage", 0)) / 1e9

    def stop(self, container: str, timeout: int = 10) -> None:
        self.call(
            f"stop container {container[:12]}",
            lambda: self.client.api.post(
                f"/containers/{container}/stop", params={"timeout": timeout}
            ).raise_for_status(),
        )

    def remove(self, container: str) -> None:
        """Force-remove a container (stopping it first). One already gone, or being removed
        by someone else (`vkrama stop` racing a Ctrl-C), is fine: its end is what was asked.
        A podman that stays lost beyond engine.reconnect is not: the container may still
        run, so that error is raised, naming it."""

        def delete() -> None:
            path = f"/containers/{container}"
            response = self.client.api.delete(path, params={"force": True, "v": True})
            if response.status_code == 500 and "state improper" in response.text:
                # Podman 4.3: a container whose process exits on the SIGTERM just as the
                # forced remove escalates to SIGKILL fails the remove ("could not be
                # stopped: ... container state improper: stopped") and is left behind,
                # exited (seen with every oneapi rpc-worker that had served a leader).
                # Once it has stopped, the remove goes through.
                self.client.api.post(f"{path}/wait", params={"condition": "not-running"})
                response = self.client.api.delete(path, params={"force": True, "v": True})
            if response.status_code not in (200, 204, 404):
                response.raise_for_status()

        try:
            self.call(f"remove {container[:12]}", delete)
        except VkramaError as error:
            if error.status == ExitStatus.ENGINE_UNAVAILABLE:
                raise VkramaError(
                    f"{error.message}: container {container[:12]} is left behind (`podman rm -f "
                    f"{container[:12]}` once podman is back)",
                    hint=f"once podman is back (`podman info` checks it): "
                    f"podman rm -f {container[:12]}",
                    status=ExitStatus.ENGINE_UNAVAILABLE,
                ) from None

    def containers(self, labels: Mapping[str, str] | None = None) -> list[ContainerSummary]:
        """vkrama's containers (all states), optionally narrowed by more labels."""
        wanted = {VERSION_LABEL: None, **(labels or {})}
        filters = [k if v is None else f"{k}={v}" for k, v in wanted.items()]
        found = self.call("list containers", lambda: self._get_json(
            "/containers/json", {"all": True, "filters": _json({"label": filters})}))  # fmt: skip
        return [_summary(item) for item in found]

    def _get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        response = self.client.api.get(path, params=params)
        response.raise_for_status()
        return response.json()


def connect(settings: Settings) -> Podman:
    """Connect to podman as the settings and environment say (see `engine.socket`)."""
    endpoint = discover(
        settings.environ,
        settings["engine.url"],
        settings.runtime_dir,
        settings["engine.idle_timeout"],
    )
    return Podman(endpoint, float(settings["engine.reconnect"]))


def _summary(item: Mapping[str, Any]) -> ContainerSummary:
    started = item.get("StartedAt") or 0
    ports = tuple(
        (p.get("host_ip") or "0.0.0.0", int(p["host_port"]), int(p["container_port"]))
        for p in item.get("Ports") or []
    )
    return ContainerSummary(
        id=item["Id"],
        name=(item.get("Names") or ["?"])[0],
        image=item.get("Image", ""),
        state=ContainerStatus(item.get("State")),
        labels=dict(item.get("Labels") or {}),
        started_at=datetime.fromtimestamp(started, tz=timezone.utc) if started > 0 else None,
        ports=ports,
    )


def _json(value: Any) -> str:
    return json.dumps(value)
