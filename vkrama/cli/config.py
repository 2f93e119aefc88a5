"""`vkrama config show`: every effective setting and where its value came from."""

from __future__ import annotations

import json

import click

from vkrama.cli.app import App, pass_app
from vkrama.cli.console import echo_json, echo_table


@click.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def show(app: App, as_json: bool) -> None:
    """Print every setting with its value and source (default, file, env VAR, flag)."""
    values = app.settings.values
    if as_json:
        echo_json({key: {"value": s.value, "source": s.source} for key, s in values.items()})
        return
    rows = [(key, json.dumps(s.value), s.source) for key, s in sorted(values.items())]
    echo_table(rows, headers=("setting", "value", "source"))
