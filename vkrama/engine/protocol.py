"""What later stages may ask of a container engine: the `Engine` protocol.

Stage: engine. `engine.client.Podman` implements it over podman's REST API; unit tests
hand the stages a fake that implements it too (tests/engine_fakes.py), so both are
type-checked against the same list. Declares; never runs anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from podman import PodmanClient

    from vkrama.engine.records import Completed, ContainerState, ContainerSummary, EngineInfo
    from vkrama.engine.spec import ContainerSpec

T = TypeVar("T")


class Engine(Protocol):
    """A connected container service: containers from `ContainerSpec`s, found by labels."""

    @property
    def client(self) -> PodmanClient:
        """podman's REST client, for `engine.images` (the image calls, in the same stage)."""
        ...

    def call(
        self, what: str, request: Callable[[], T], again: Callable[[], None] | None = None
    ) -> T:
        """`request()`, one podman API call, with its errors made `VkramaError`s (`what`
        names it). When podman's service is lost it waits for it (settings engine.reconnect)
        and repeats the request, calling `again()` first to clear what a lost attempt may
        have half done."""
        ...

    def info(self) -> EngineInfo: ...

    def create(self, spec: ContainerSpec) -> str: ...

    def start(self, container: str) -> None: ...

    def run(self, spec: ContainerSpec, secret_values: Mapping[str, str] | None = None) -> str: ...

    def remove_launched(self, launch: str) -> None: ...

    def create_secret(self, name: str, value: str) -> None: ...

    def remove_secret(self, name: str) -> None: ...

    def wait(
        self, container: str, timeout: float | None = None, start_grace: float = ...
    ) -> int: ...

    def state(self, container: str) -> ContainerState: ...

    def alive(self, container: str) -> bool:
        """Whether the container is running or about to (False once it ended or is gone)."""
        ...

    def logs(
        self,
        container: str,
        *,
        stdout: bool = True,
        stderr: bool = True,
        follow: bool = False,
        tail: int | None = None,
    ) -> Iterator[str]: ...

    def run_to_completion(
        self,
        spec: ContainerSpec,
        timeout: float | None = None,
        on_running: Callable[[int], None] | None = None,
        on_stdout: Callable[[str], None] | None = None,
    ) -> Completed: ...

    def cpu_seconds(self, container: str) -> float: ...

    def stop(self, container: str, timeout: int = 10) -> None: ...

    def remove(self, container: str) -> None: ...

    def containers(self, labels: Mapping[str, str] | None = None) -> list[ContainerSummary]: ...
