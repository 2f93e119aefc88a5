"""`vkrama ps`, `stop`, `logs`: the servers vkrama started, found by their labels.

Stage: CLI shell over `vkrama.serve.containers`: flags ─► one query or action ─► a table,
JSON or log lines. No state file: every server is a container carrying `vkrama.*` labels.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterable

import click

from vkrama.cli import console
from vkrama.cli.app import App, dry_run_option, pass_app
from vkrama.errors import ExitStatus, VkramaError
from vkrama.serve import containers


def say(message: str) -> None:
    click.echo(message, err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_app
def ps(app: App, as_json: bool) -> None:
    """List vkrama servers (from container labels)."""
    rows = containers.list_servers(app.engine)
    if as_json:
        console.echo_json(rows)
        return
    if not rows:
        say("No vkrama containers. Start one with `vkrama serve MODEL -d`.")
        return
    table = [
        [row.name, row.model, row.backend, device_text(row), row.url, row.state,
         uptime_text(row.uptime_s())]
        for row in rows
    ]  # fmt: skip
    headers = ["NAME", "MODEL", "BACKEND", "DEVICE", "URL", "STATE", "UPTIME"]
    console.echo_table(table, headers=headers, tablefmt="plain")


def device_text(row: containers.ServerRow) -> str:
    if row.driver and row.driver not in row.device:
        return f"{row.device} ({row.driver})"
    return row.device or "-"


def uptime_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("names", nargs=-1, metavar="NAME...")
@click.option("--all", "every", is_flag=True, help="Stop every vkrama server.")
@dry_run_option
@pass_app
def stop(app: App, names: tuple[str, ...], every: bool) -> None:
    """Stop and remove vkrama containers."""
    if not names and not every:
        raise VkramaError(
            "say which servers to stop",
            hint="`vkrama stop NAME...`, or `vkrama stop --all`; `vkrama ps` lists them",
            status=ExitStatus.USAGE,
        )
    targets = containers.stop_targets(app.engine, names, every)
    for server in targets:
        if app.dry_run:
            click.echo(shlex.join(containers.stop_command(server)))
            continue
        containers.stop(app.engine, server)
        click.echo(server.name)
    if every and not targets:
        say("No vkrama containers.")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", type=click.IntRange(min=0), metavar="N", help="Only the last N lines.")
@pass_app
def logs(app: App, name: str, follow: bool, tail: int | None) -> None:
    """Print a vkrama server's log."""
    row = containers.find_server(app.engine, name)
    with contextlib.suppress(KeyboardInterrupt):
        if tail is not None and not follow:
            lines: Iterable[str] = containers.log_tail(app.engine, row.id, tail)
        else:
            lines = app.engine.logs(row.id, follow=follow, tail=tail)
        for line in lines:
            click.echo(line)
