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
    settings: config.Settings
    verbose: int = 0
    dry_run: bool = False
    _engine: Engine | None = field(default=None, repr=False)

    @classmethod
    def create(cls, *, verbose: int, dry_run: bool, overrides: Mapping[str, Any]) -> App:
        settings = config.load().with_overrides(overrides)
        return cls(settings=settings, verbose=verbose, dry_run=dry_run)

    @property
    def engine(self) -> Engine:
        """Connect to podman on first use (commands that never need it never pay for it)."""
        if self._engine is None:
            from vkrama.engine import connect

            self._engine = connect(self.settings)
        return self._engine


pass_app = click.make_pass_decorator(App)
