"""The engine stage: podman through its API. The only package that imports podman-py.

`connect(settings)` finds or starts a podman service and returns a `Podman`, which
implements the `Engine` protocol the later stages are typed against; planning stages
describe containers as `ContainerSpec`s and hand them to it.

Modules: `spec` (ContainerSpec, rendered as the podman argv and as the API body),
`protocol` (the `Engine` the later stages are typed against), `client` (`Podman`:
containers through podman's REST API), `images` (builds, inspect, list, remove, one
file read), `archives` (save and load image archives), `socket` (find or start the API
socket), `records` (what podman says back, typed), `errors` (podman-py's and the
transport's exceptions as `VkramaError`s), `signals` (Ctrl-C held back while podman
creates a container). This file only re-exports.
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
