"""`vkrama pull | list | inspect | rm`: the model store from the command line.

Stage: CLI shell over `vkrama.store`. Parses flags, calls one store function, renders the
result; the progress line (bytes, rate, ETA) is drawn here, on a TTY only.
"""

from __future__ import annotations

import sys

import click

from vkrama import store
from vkrama.cli.app import App, pass_app, refuses_dry_run
from vkrama.cli.console import echo_json, echo_table, to_json
from vkrama.cli.progress import reporting
from vkrama.errors import ExitStatus, VkramaError
from vkrama.store import LocalModel


def _row(model: LocalModel) -> tuple[str, ...]:
    info = model.metadata
    params = (
        f"{info.parameter_count / 1e9:.2f} B"
        if info.parameter_count >= 1e8
        else (f"{info.parameter_count / 1e6:.1f} M")
    )
    return (
        model.name, model.source, f"{model.size / 2**20:.1f} MiB", model.sha256[:12],
        info.architecture, info.quantization, params, str(info.context_length or "?"),
    )  # fmt: skip


HEADERS = ("name", "source", "size", "sha256", "arch", "quant", "params", "context")


@click.command()
@click.argument("ref")
@click.option("--sha256", metavar="HEX", help="Expected sha256 (for plain URLs and files).")
@click.option(
    "--streams",
    type=click.IntRange(1, 64),
    help="Connections for one large file where the server takes ranges (models.streams, 8).",
)
@pass_app
@refuses_dry_run("pull downloads the model; `vkrama inspect REF` shows a stored one")
def pull(app: App, ref: str, sha256: str | None, streams: int | None) -> None:
    """Fetch a model into the store: hf://ORG/REPO[:QUANT], hf://ORG/REPO/FILE.gguf,
    ollama://NAME[:TAG], oci://REGISTRY/REPO[:TAG], https://URL, file://PATH or a path."""
    settings = app.settings.with_overrides({"models.streams": streams})
    with reporting(app.verbose) as reporter:
        model = store.pull(settings, ref, on_progress=reporter, sha256=sha256)
    click.echo(f"{model.name}  {model.sha256}  {model.path}")


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def list_(app: App, as_json: bool) -> None:
    """List the models in the store with their GGUF facts."""
    found = store.models(app.settings)
    for path in store.corrupt_records(app.settings):
        click.echo(f"Warning: {path} is corrupt and left out; `vkrama pull` it again", err=True)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("No models yet; `vkrama pull REF` fetches one.", err=True)
        return
    echo_table([_row(m) for m in found], headers=HEADERS)


@click.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def inspect(app: App, ref: str, as_json: bool) -> None:
    """Show one model (stored, or a GGUF file): files, sha256, GGUF metadata."""
    model = store.resolve(app.settings, ref)
    data = to_json(model)
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        shown = "\n  ".join(value) if isinstance(value, list) else value
        click.echo(f"{key}: {shown}")


@click.command()
@click.argument("ref")
@click.option("--force", is_flag=True, help="Remove it even while a server uses it.")
@pass_app
@refuses_dry_run("`vkrama inspect REF` shows what rm would remove")
def rm(app: App, ref: str, force: bool) -> None:
    """Remove a model from the store (files shared with other names stay, and so do files in
    the Hugging Face cache: other tools use them)."""
    # Imported here: it brings the serve plan, backends and yaml, which pull never needs.
    from vkrama.serve import containers

    model = store.resolve(app.settings, ref)
    try:
        users = containers.servers_of(app.engine, model.path)
    except VkramaError as error:
        # No podman: then no server of vkrama's runs either.
        if error.status != ExitStatus.ENGINE_UNAVAILABLE:
            raise
        users = []
    if users and not force:
        names = ", ".join(row.name for row in users)
        raise VkramaError(
            f"{model.name} is used by {names}; it could never restart without its model",
            hint=f"`vkrama stop {users[0].name}` first, or `vkrama rm --force {ref}`",
            status=ExitStatus.IN_USE,
        )
    for row in users:
        click.echo(f"Warning: {row.name} uses {model.name} and cannot restart", err=True)
    model = store.remove(app.settings, ref)
    click.echo(f"removed {model.name}", file=sys.stdout)
