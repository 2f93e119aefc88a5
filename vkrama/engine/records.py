"""What podman says back, typed: the service, a finished container, a container's state.

Stage: engine. Pure data filled in by `engine.client`; later stages read these instead of
podman's JSON. Must not import podman-py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum


@dataclass(frozen=True)
class EngineInfo:
    version: str
    api_version: str
    url: str
    source: str
    started_service: bool
    oci_runtime: str
    storage_driver: str
    rootless: bool


@dataclass(frozen=True)
class Completed:
    """A container that ran to its end: exit code and its two output streams."""

    exit_code: int
    stdout: str
    stderr: str


class ContainerStatus(str, Enum):
    """A container's state as podman names it."""

    CREATED = "created"
    CONFIGURED = "configured"
    INITIALIZED = "initialized"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    REMOVING = "removing"
    DEAD = "dead"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> ContainerStatus:
        return cls.UNKNOWN  # a state a newer podman added: not one vkrama acts on

    def __str__(self) -> str:  # tables show the word
        return self.value

    @property
    def alive(self) -> bool:
        """Running, or about to: what a server that is still starting looks like."""
        return self in (
            ContainerStatus.CREATED,
            ContainerStatus.CONFIGURED,
            ContainerStatus.RUNNING,
        )


@dataclass(frozen=True)
class ContainerState:
    """What `Engine.state` reads of a container: its status and, once exited, its code."""

    status: ContainerStatus
    exit_code: int
    pid: int = 0  # the host pid of its process; 0 when it is not running


@dataclass(frozen=True)
class ContainerSummary:
    id: str
    name: str
    image: str
    state: ContainerStatus
    labels: dict[str, str]
    started_at: datetime | None
    ports: tuple[tuple[str, int, int], ...]  # (host ip, host port, container port)
