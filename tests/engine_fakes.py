"""A stand-in for the engine seam: `NullEngine` implements the `Engine` protocol and fails
the test on any call it was not meant to get. Fakes subclass it and override only what the
code under test calls, so mypy checks them against the real protocol, without ignores; the
two methods of long signatures each call a short hook (`complete`, `log_lines`) to override
instead."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, NoReturn, TypeVar

if TYPE_CHECKING:
    from podman import PodmanClient

    from vkrama.engine import Completed, ContainerSpec, ContainerState, ContainerSummary, EngineInfo


T = TypeVar("T")


class UnexpectedCall(AssertionError):
    """The code under test asked the engine for something this fake does not do."""


def _unexpected(what: str) -> NoReturn:
    raise UnexpectedCall(f"the engine was not meant to {what}")


class NullEngine:
    """Every `Engine` method, each failing the test; subclass and override what is used."""

    @property
    def client(self) -> PodmanClient:
        _unexpected("speak REST")

    def call(
        self, what: str, request: Callable[[], T], again: Callable[[], None] | None = None
    ) -> T:
        return request()  # a fake's own requests; none reaches podman

    def info(self) -> EngineInfo:
        _unexpected("report info")

    def create(self, spec: ContainerSpec) -> str:
        _unexpected(f"create {spec.name}")

    def start(self, container: str) -> None:
        _unexpected(f"start {container}")

    def run(self, spec: ContainerSpec, secret_values: Mapping[str, str] | None = None) -> str:
        _unexpected(f"run {spec.name}")

    def remove_launched(self, launch: str) -> None:
        _unexpected(f"remove launch {launch}")

    def create_secret(self, name: str, value: str) -> None:
        _unexpected(f"create secret {name}")

    def remove_secret(self, name: str) -> None:
        _unexpected(f"remove secret {name}")

    def wait(self, container: str, timeout: float | None = None, start_grace: float = 0) -> int:
        _unexpected(f"wait for {container}")

    def state(self, container: str) -> ContainerState:
        _unexpected(f"inspect {container}")

    def alive(self, container: str) -> bool:
        _unexpected(f"ask whether {container} is alive")

    def logs(
        self,
        container: str,
        *,
        stdout: bool = True,
        stderr: bool = True,
        follow: bool = False,
        tail: int | None = None,
    ) -> Iterator[str]:
        return self.log_lines(container)

    def log_lines(self, container: str) -> Iterator[str]:
        """What `logs` yields, whatever it was asked."""
        _unexpected(f"read the log of {container}")

    def run_to_completion(
        self,
        spec: ContainerSpec,
        timeout: float | None = None,
        on_running: Callable[[int], None] | None = None,
        on_stdout: Callable[[str], None] | None = None,
    ) -> Completed:
        return self.complete(spec)

    def complete(self, spec: ContainerSpec) -> Completed:
        """What `run_to_completion` returns, whatever else it was handed."""
        _unexpected(f"run {spec.name} to completion")

    def cpu_seconds(self, container: str) -> float:
        _unexpected(f"read the CPU time of {container}")

    def stop(self, container: str, timeout: int = 10) -> None:
        _unexpected(f"stop {container}")

    def remove(self, container: str) -> None:
        _unexpected(f"remove {container}")

    def containers(self, labels: Mapping[str, str] | None = None) -> list[ContainerSummary]:
        _unexpected("list containers")
