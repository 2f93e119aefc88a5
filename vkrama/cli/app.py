"""What every command gets: the settings, the global flags and a lazily connected engine.

Stage: CLI glue. Holds no domain logic; commands read `app.settings` and pass typed values
down, never the App itself.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from vkrama.errors import ExitStatus, VkramaError

if TYPE_CHECKING:
    from vkrama import config
    from vkrama.engine import Engine


@dataclass
class App:
    overrides: Mapping[str, Any] = field(default_factory=dict)  # the global flags' settings
    verbose: int = 0
    dry_run: bool = False
    _settings: config.Settings | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def settings(self) -> config.Settings:
        """Read on first use, so that `--help` and `config show` work with a broken config
        (`config show` reads it itself, collecting its problems)."""
        if self._settings is None:
            from vkrama import config  # here: `--help` must not pay for tomllib and pathlib

            self._settings = config.load().with_overrides(self.overrides)
        return self._settings

    @property
    def engine(self) -> Engine:
        """Connect to podman on first use (commands that never need it never pay for it)."""
        if self._engine is None:
            from vkrama.engine import connect

            self._engine = connect(self.settings)
        return self._engine


pass_app = click.make_pass_decorator(App)


def dry_run_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--dry-run` after the subcommand too (`vkrama serve M --dry-run`), as users type it;
    it means the same as before the subcommand."""

    def enable(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(App).dry_run = True  # type: ignore[union-attr]

    return click.option(
        "--dry-run",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=enable,
        help="Print what would change (the podman commands) and change nothing.",
    )(command)


def refuses_dry_run(why: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For a command that changes something and cannot show it without doing it: --dry-run
    (before or after the subcommand) is a usage error, never silently ignored."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def checked(app: App, *args: Any, **kwargs: Any) -> Any:
            if app.dry_run:
                raise VkramaError(
                    f"--dry-run is not supported here: {why}",
                    hint="run it without --dry-run",
                    status=ExitStatus.USAGE,
                )
            return command(app, *args, **kwargs)

        return dry_run_option(checked)

    return decorate


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGINT take Ctrl-C's clean path while the block runs, through
    the one signal path (vkrama.engine.signals.interrupts, which says why)."""
    from vkrama.engine import signals  # here: the engine imports podman-py, --help must not

    with signals.interrupts():
        yield
