"""Progress: how a stage tells the console what it is doing, as typed events.

Stage: shared by every stage, like errors and config. Domain code takes a `Reporter`
(`NullReporter()` by default, httpie's null display) and hands it one event at a time;
the CLI supplies the console's (a redrawn line on a terminal, plain lines otherwise).
Must not print, import click or import any later stage: the events are plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Step:
    """A line saying what a stage does or why it chose something.

    `detail` marks a line that only -v shows (a backend the user named needs no word;
    one vkrama picked explains itself)."""

    message: str
    detail: bool = False

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class BuildProgress:
    """One line of an image build's output, with the step it belongs to (0/0 before the
    first)."""

    backend: str
    step: int
    total: int
    line: str


@dataclass(frozen=True)
class Download:
    """Bytes of a file on disk so far: a model from its source (`resumed_from` were there
    before this pull), an image archive from podman (`total` unknown)."""

    filename: str
    done: int
    total: int | None
    resumed_from: int = 0


@dataclass(frozen=True)
class Retry:
    """A failed attempt about to be repeated: reported so a silent server is never a silent
    wait (five 30 s timeouts plus backoff are 158 s)."""

    what: str
    reason: str
    attempt: int  # the retry about to start, from 1
    retries: int
    wait_s: float

    def __str__(self) -> str:
        return (
            f"{self.what}: {self.reason}; retry {self.attempt} of {self.retries} "
            f"in {round(self.wait_s, 2):g} s"  # jittered: 0.61 s, not 0.613427 s
        )


@dataclass(frozen=True)
class Waiting:
    """Still waiting for `what` (a server to answer); `done` once the wait is over, either
    way."""

    what: str
    elapsed_s: float
    done: bool = False


Event = Step | BuildProgress | Download | Retry | Waiting


class Reporter(Protocol):
    """Takes every event a stage reports; the one progress interface of vkrama."""

    def __call__(self, event: Event, /) -> None: ...


class NullReporter:
    """Reports nowhere: the default, so domain code never checks for None."""

    def __call__(self, event: Event, /) -> None:
        pass


NULL = NullReporter()
