"""Exit codes and the one error type every stage raises for user-facing failures.

Stage: shared by all stages. Must not print: the CLI is the one place that turns a
`VkramaError` into `Error: …` / `Hint: …` lines. Unknown exceptions are bugs and keep
their traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes; each failure a script may want to tell apart has its own."""

    OK = 0
    ERROR = 1
    USAGE = 2
    CONFIG = 3
    ENGINE_UNAVAILABLE = 4
    NOT_FOUND = 5
    TIMEOUT = 6
    CONTAINER_EXITED = 7
    BACKEND_UNAVAILABLE = 8
    IMAGE_UNAVAILABLE = 9
    BUILD_FAILED = 10
    NETWORK = 11
    AUTH = 12
    CHECKSUM = 13
    INCOMPLETE = 14
    INVALID_MODEL = 15
    PORT_IN_USE = 16
    OFFLINE = 17
    BENCH_FAILED = 18
    IN_USE = 19
    UNSAFE_NAME = 20  # a reference or a server named a path that could leave the store
    INTERRUPTED = 130


class VkramaError(Exception):
    """A failure the user can act on: one line of message, an optional hint, an exit code."""

    def __init__(
        self, message: str, *, hint: str | None = None, status: ExitStatus = ExitStatus.ERROR
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status

    def __str__(self) -> str:
        return self.message
