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
from typing import Any

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
from vkrama.engine.socket import Endpoint, discover, keep_alive
from vkrama.engine.spec import LAUNCH_LABEL, VERSION_LABEL, ContainerSpec
from vkrama.errors import ExitStatus, VkramaError

NEVER_STARTED_S = 30.0  # a started container still "created" after this long never will be
STARTING_POLL_S = 0.05
FOLLOW_END_S = 5.0  # how long a log follower may lag behind the container's exit


class Podman:
    """A connected podman service: implements `engine.protocol.Engine`."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.client = PodmanClient(base_url=endpoint.url, timeout=None)
        keep_alive(endpoint)

    # -- service -------------------------------------------------------------------------
    def info(self) -> EngineInfo:
        with translate_errors("podman info"):
            data = self.client.info()  # type: ignore[no-untyped-call]  # podman-py's is untyped
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
        """Create (not start) a container; returns its id."""
        body = spec.api_body()
        # Held back until podman answers: an interrupt mid-request would leave the
        # container it goes on to create unknown to our clean-up (engine/signals.py).
        with signals.held(), translate_errors(f"create container from {spec.image}"):
            response = self.client.api.post(
                "/containers/create", data=_json(body), headers={"content-type": "application/json"}
            )
            response.raise_for_status()
        return str(response.json()["Id"])

    def start(self, container: str) -> None:
        with translate_errors(f"start container {container[:12]}"):
            self.client.api.post(f"/containers/{container}/start").raise_for_status()

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
        with translate_errors(f"create secret {name}"):
            self.client.api.post(
                "/secrets/create", params={"name": name}, data=value.encode("utf-8")
            ).raise_for_status()

    def remove_secret(self, name: str) -> None:
        """Remove a podman secret; one already gone is fine."""
        with contextlib.suppress(VkramaError), translate_errors(f"remove secret {name}"):
            response = self.client.api.delete(f"/secrets/{name}")
            if response.status_code not in (200, 204, 404):
                response.raise_for_status()

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
        left = None if timeout is None else max(0.1, timeout - (time.monotonic() - began))
        try:
            with translate_errors(f"wait for container {container[:12]}"):
                response = self.client.api.post(f"/containers/{container}/wait", timeout=left)
                response.raise_for_status()
        except VkramaError as error:
            if error.status == ExitStatus.TIMEOUT:
                raise VkramaError(
                    f"container {container[:12]} still running after {timeout:.0f} s",
                    status=ExitStatus.TIMEOUT,
                ) from None
            raise
        return int(response.json())

    def state(self, container: str) -> ContainerState:
        with translate_errors(f"inspect container {container[:12]}"):
            response = self.client.api.get(f"/containers/{container}/json")
            response.raise_for_status()
        found = response.json()["State"]
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
        if tail is None:
            yield from self._log_lines(container, stdout, stderr, follow=follow)
            return
        seen = 0
        kept: collections.deque[str] = collections.deque(maxlen=max(tail, 0))
        for line in self._log_lines(container, stdout, stderr):
            seen += 1
            kept.append(line)
        yield from kept
        if follow:
            # following replays the log from its start: skip what was already read
            for number, line in enumerate(self._log_lines(container, stdout, stderr, True)):
                if number >= seen:
                    yield line

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
        with translate_errors(f"stats of {container[:12]}"):
            response = self.client.api.get(
                f"/containers/{container}/stats", params={"stream": False}
            )
            response.raise_for_status()
        usage = response.json().get("cpu_stats", {}).get("cpu_usage", {})
        return float(usage.get("total_usage", 0)) / 1e9

    def stop(self, container: str, timeout: int = 10) -> None:
        with translate_errors(f"stop container {container[:12]}"):
            self.client.api.post(
                f"/containers/{container}/stop", params={"timeout": timeout}
            ).raise_for_status()

    def remove(self, container: str) -> None:
        """Force-remove a container (stopping it first). One already gone, or being removed
        by someone else (`vkrama stop` racing a Ctrl-C), is fine: its end is what was asked.
        A lost podman is not: the container may still run, so that error is raised."""
        try:
            with translate_errors(f"remove {container[:12]}"):
                response = self.client.api.delete(
                    f"/containers/{container}", params={"force": True, "v": True}
                )
                if response.status_code not in (200, 204, 404):
                    response.raise_for_status()
        except VkramaError as error:
            if error.status == ExitStatus.ENGINE_UNAVAILABLE:
                raise

    def containers(self, labels: Mapping[str, str] | None = None) -> list[ContainerSummary]:
        """vkrama's containers (all states), optionally narrowed by more labels."""
        wanted = {VERSION_LABEL: None, **(labels or {})}
        filters = [k if v is None else f"{k}={v}" for k, v in wanted.items()]
        with translate_errors("list containers"):
            response = self.client.api.get(
                "/containers/json", params={"all": True, "filters": _json({"label": filters})}
            )
            response.raise_for_status()
        return [_summary(item) for item in response.json()]


def connect(settings: Settings) -> Podman:
    """Connect to podman as the settings and environment say (see `engine.socket`)."""
    endpoint = discover(
        settings.environ,
        settings["engine.url"],
        settings.runtime_dir,
        settings["engine.idle_timeout"],
    )
    return Podman(endpoint)


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
