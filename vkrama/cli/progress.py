"""The console's `Reporter`: how a stage's progress events reach the terminal.

Stage: CLI rendering of `vkrama.progress` events, all on stderr so that `--json` on stdout
stays clean. Steps are lines (details only with -v); the model download is a redrawn
`name  312.0/812.4 MiB  41.2 MiB/s  ETA 0:12` line on a terminal and only its retries
otherwise; an image build, whichever command starts it, is drawn one way: `[vulkan] step
6/11  <current line>` redrawn on a terminal, otherwise one line per step (every line for
`images build` and with -v: CI logs keep the whole build output). A wait (a server
starting) is a spinner on a terminal and nothing otherwise.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from vkrama.cli.console import interactive
from vkrama.progress import BuildProgress, Download, Event, Retry, Step, Waiting


class ConsoleReporter:
    """Steps, downloads and builds on stderr; `close()` (or `reporting`) when done."""

    def __init__(
        self, verbose: int = 0, *, every_build_line: bool = False, tty: bool | None = None
    ) -> None:
        tty = interactive() if tty is None else tty
        self.verbose = verbose
        self.download = ProgressLine(draw=tty)
        self.build = BuildDisplay(tty=tty, every_line=every_build_line or verbose > 0)
        self.spinner = Spinner(draw=tty)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Step):
            if self.verbose or not event.detail:
                self.close()
                click.echo(event.message, err=True)
        elif isinstance(event, BuildProgress):
            self.download.close()
            self.build(event)
        elif isinstance(event, Waiting):
            self.spinner(event)
        else:
            self.build.close()
            self.download(event)

    def close(self) -> None:
        """End a redrawn line so that what follows starts on a fresh one."""
        self.download.close()
        self.build.close()
        self.spinner.close()


@contextmanager
def reporting(verbose: int = 0, *, every_build_line: bool = False) -> Iterator[ConsoleReporter]:
    """A `ConsoleReporter` whose last redrawn line is ended however the block ends."""
    reporter = ConsoleReporter(verbose, every_build_line=every_build_line)
    try:
        yield reporter
    finally:
        reporter.close()


class Spinner:
    """`⠋ starting vkrama-tiny-8080 (1.2 s)` redrawn on a terminal, erased when the wait ends."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, draw: bool = True) -> None:
        self.draw = draw
        self.drawn = -1.0
        self.active = False

    def __call__(self, waiting: Waiting) -> None:
        if waiting.done:
            self.close()
            return
        if not self.draw or waiting.elapsed_s - self.drawn < 0.1:
            return
        self.drawn = waiting.elapsed_s
        frame = self.FRAMES[int(waiting.elapsed_s * 10) % len(self.FRAMES)]
        click.echo(f"\r{frame} {waiting.what} ({waiting.elapsed_s:.1f} s)", err=True, nl=False)
        self.active = True

    def close(self) -> None:
        if self.active:
            click.echo("\r\033[K", err=True, nl=False)
            self.active = False
        self.drawn = -1.0


class ProgressLine:
    """`name  312.0/812.4 MiB  41.2 MiB/s  ETA 0:12` redrawn in place on stderr, and a line
    of its own for each retry (a server that never answers must not look like a hang in a
    log)."""

    def __init__(self, draw: bool = True) -> None:
        self.draw = draw
        self.started = time.monotonic()
        self.first_done: int | None = None
        self.drawn = 0.0
        self.active = False

    def __call__(self, progress: Download | Retry) -> None:
        if isinstance(progress, Retry):
            self.close()
            click.echo(f"{progress}", err=True)
            return
        if not self.draw:
            return
        now = time.monotonic()
        if self.first_done is None:
            self.started, self.first_done = now, progress.done
        finished = progress.total is not None and progress.done >= progress.total
        if now - self.drawn < 0.1 and not finished:
            return
        self.drawn = now
        elapsed = max(now - self.started, 1e-6)
        rate = (progress.done - self.first_done) / elapsed
        total = "?" if progress.total is None else _mib(progress.total)
        line = f"{progress.filename}  {_mib(progress.done)}/{total} MiB  {rate / 2**20:.1f} MiB/s"
        if progress.total is not None and rate > 0:
            left = int((progress.total - progress.done) / rate)
            line += f"  ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
        click.echo(f"\r{line}\x1b[K", nl=False, err=True)
        self.active = True

    def close(self) -> None:
        if self.active:
            click.echo(err=True)
            self.active = False


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f}"


class BuildDisplay:
    """An image build's lines: redrawn on a TTY; otherwise each line (`every_line`) or the
    first line of each step."""

    def __init__(
        self, tty: bool | None = None, min_interval: float = 0.05, every_line: bool = True
    ) -> None:
        self.tty = interactive() if tty is None else tty
        self.min_interval = min_interval
        self.every_line = every_line
        self.steps_seen: set[tuple[str, int]] = set()
        self.drawn = 0.0
        self.active = False

    def __call__(self, progress: BuildProgress) -> None:
        if not self.tty:
            if self.every_line:
                click.echo(f"[{progress.backend}] {progress.line}", err=True)
            elif (progress.backend, progress.step) not in self.steps_seen:
                # One line per step; podman's own lines would drown the command's.
                self.steps_seen.add((progress.backend, progress.step))
                click.echo(render_line(progress, width=0), err=True)
            return
        now = time.monotonic()
        # Step lines are always drawn; apt's flood of lines is thinned to ~20 redraws/s.
        if now - self.drawn < self.min_interval and not progress.line.startswith("STEP "):
            return
        self.drawn = now
        click.echo(f"\r{render_line(progress, shutil.get_terminal_size().columns)}\x1b[K",
                   nl=False, err=True)  # fmt: skip
        self.active = True

    def close(self) -> None:
        """End the redrawn line so that what follows starts on a fresh one."""
        if self.active:
            click.echo(err=True)
            self.active = False


def render_line(progress: BuildProgress, width: int = 80) -> str:
    """`[vulkan] step 6/11  Unpacking mesa-vulkan-drivers …` cut to the terminal width
    (`width=0`: not cut)."""
    step = f" step {progress.step}/{progress.total}" if progress.total else ""
    line = progress.line
    if line.startswith("STEP "):
        line = line.split(": ", 1)[-1]
    text = f"[{progress.backend}]{step}  {' '.join(line.split())}"
    return text if not width or len(text) <= width - 1 else text[: max(width - 2, 1)] + "…"
