"""How an image build shows up: `[vulkan] step 6/11  <current line>` redrawn on a TTY,
every line as `[vulkan] <line>` otherwise (CI logs keep the whole build output).

Stage: CLI rendering of `images.BuildProgress` events. `images build` uses it, and so can
any command whose first use of a backend builds its image (`images.ensure`). All output
goes to stderr so that `--json` on stdout stays clean.
"""

from __future__ import annotations

import shutil
import time

import click

from vkrama.cli.console import interactive
from vkrama.images import BuildProgress


class BuildDisplay:
    """A callable `on_progress` for `images.build`/`images.ensure`; `close()` when done."""

    def __init__(self, tty: bool | None = None, min_interval: float = 0.05) -> None:
        self.tty = interactive() if tty is None else tty
        self.min_interval = min_interval
        self.drawn = 0.0
        self.active = False

    def __call__(self, progress: BuildProgress) -> None:
        if not self.tty:
            click.echo(f"[{progress.backend}] {progress.line}", err=True)
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
    """`[vulkan] step 6/11  Unpacking mesa-vulkan-drivers …` cut to the terminal width."""
    step = f" step {progress.step}/{progress.total}" if progress.total else ""
    line = progress.line
    if line.startswith("STEP "):
        line = line.split(": ", 1)[-1]
    text = f"[{progress.backend}]{step}  {' '.join(line.split())}"
    return text if len(text) <= width - 1 else text[: max(width - 2, 1)] + "…"
