"""The engine stage: podman through its API. The only package that imports podman-py.

`connect(settings)` finds or starts a podman service and returns an `Engine`; planning
stages describe containers as `ContainerSpec`s and hand them to it.
"""

from vkrama.engine.client import Engine, connect
from vkrama.engine.records import (
    Completed,
    ContainerState,
    ContainerStatus,
    ContainerSummary,
    EngineInfo,
)
from vkrama.engine.spec import ContainerSpec, Mount, PortMapping

__all__ = [
    "Completed",
    "ContainerSpec",
    "ContainerState",
    "ContainerStatus",
    "ContainerSummary",
    "Engine",
    "EngineInfo",
    "Mount",
    "PortMapping",
    "connect",
]
