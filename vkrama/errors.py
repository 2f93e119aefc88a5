"""Exit codes and the one error type every stage raises for user-facing failures.

Stage: shared by all stages. Must not print: the CLI is the one place that turns a
`VkramaError` into `Error: …` / `Hint: …` lines. Unknown exceptions are bugs and keep
their traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
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
    DISK = 21  # the disk is full, or vkrama's home is not writable
    MISSING_EXTRA = 22  # an optional extra (e.g. vkrama[charts]) is not installed
    BUDGET = 23  # `vkrama tune --budget` is too small for one trial
    NOTHING_FITS = 24  # `vkrama tune`: no candidate configuration runs the model
    NO_POWER_COUNTER = 25  # `tune --for joules`, `--rank-by joules`: no energy to rank by
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


FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def disk_error(exc: OSError, doing: str, where: object) -> VkramaError | None:
    """`exc` as a DISK error saying what failed and where (its file, else `where`), if the
    disk is what failed."""
    # A copy or a rename names its destination second: that is where the writing failed.
    named = exc.filename2 if exc.filename2 is not None else exc.filename
    where = os.fsdecode(named) if named is not None else str(where)
    if exc.errno in FULL:
        free = _free(where)
        left = f" ({free // 2**20} MiB free)" if free is not None else ""
        return VkramaError(
            f"{doing}: no space left on the file system of {where}{left}",
            hint="free some space there, or point VKRAMA_HOME at a larger file system;"
            " nothing half-written was kept",
            status=ExitStatus.DISK,
        )
    if exc.errno in NOT_WRITABLE:
        why = "read-only file system" if exc.errno == errno.EROFS else "permission denied"
        return VkramaError(
            f"{doing}: cannot write {where} ({why})",
            hint="make VKRAMA_HOME writable, or point it at a writable folder",
            status=ExitStatus.DISK,
        )
    return None


@contextlib.contextmanager
def disk_errors(doing: str, where: object) -> Iterator[None]:
    """Turn a full or unwritable disk into a DISK error; other OSErrors stay bugs.

    `where` (a folder) is named when the error does not say which file it was (a write).
    """
    try:
        yield
    except OSError as exc:
        error = disk_error(exc, doing, where)
        if error is None:
            raise
        raise error from None


def _free(where: str) -> int | None:
    path = os.path.abspath(where)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        found = os.statvfs(path)  # shutil.disk_usage's free, without its 2 ms import
        return found.f_bavail * found.f_frsize
    except OSError:
        return None
