"""`vkrama config show`: every effective setting and where its value came from.

Stage: CLI shell over `vkrama.config`. Reads the settings itself, collecting problems, so
that a bad file or variable is shown next to the others instead of ending the command.
"""

from __future__ import annotations

import json

import click

from vkrama import config as config_module
from vkrama.cli.app import App, pass_app
from vkrama.cli.console import echo_json, echo_table
from vkrama.errors import ExitStatus, VkramaError


@click.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def show(app: App, as_json: bool) -> int:
    """Print every setting with its value and source (default, file, env VAR, flag); a bad
    value is shown with what is wrong with it, and the exit code is then 3."""
    problems: list[VkramaError] = []
    values = config_module.load(problems=problems).with_overrides(app.overrides).values
    if as_json:
        # "problem" only where there is one: the shape scripts read stays as it was.
        shown = {key: {"value": s.value, "source": s.source} for key, s in values.items()}
        for key, setting in values.items():
            if setting.problem is not None:
                shown[key]["problem"] = setting.problem
        echo_json(shown)
    else:
        rows = [
            (key, json.dumps(s.value), s.source if s.problem is None else f"{s.source}: INVALID")
            for key, s in sorted(values.items())
        ]
        echo_table(rows, headers=("setting", "value", "source"))
    for problem in problems:
        click.echo(f"Error: {problem.message}", err=True)
        if problem.hint:
            click.echo(f"Hint: {problem.hint}", err=True)
    return int(ExitStatus.CONFIG if problems else ExitStatus.OK)
