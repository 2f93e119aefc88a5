"""The engine stage: podman through its API. The only package that imports podman-py.

`connect(settings)` finds or starts a podman service and returns a `Podman`, which
implements the `Engine` protocol the later stages are typed against; planning stages
describe containers as `ContainerSpec`s and hand them to it.
"""

from vkrama.engine.client import Podman, connect
from vkrama.engine.protocol import Engine
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
    "Podman",
    "PortMapping",
    "connect",
]
