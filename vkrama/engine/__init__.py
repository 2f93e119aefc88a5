"""The engine stage: podman through its API. The only package that imports podman-py.

`connect(settings)` finds or starts a podman service and returns an `Engine`; planning
stages describe containers as `ContainerSpec`s and hand them to it.
"""

from vkrama.engine.client import Completed, ContainerSummary, Engine, EngineInfo, connect
from vkrama.engine.spec import ContainerSpec, Mount, PortMapping

__all__ = [
    "Completed",
    "ContainerSpec",
    "ContainerSummary",
    "Engine",
    "EngineInfo",
    "Mount",
    "PortMapping",
    "connect",
]
