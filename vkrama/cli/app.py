"""What every command gets: the settings, the global flags and a lazily connected engine.

Stage: CLI glue. Holds no domain logic; commands read `app.settings` and pass typed values
down, never the App itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from vkrama import config

if TYPE_CHECKING:
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
