"""`vkrama info`: versions, the podman socket in use, config files and state paths."""

from __future__ import annotations

import click

from vkrama import __version__
from vkrama.cli.app import App, pass_app
from vkrama.cli.console import echo_json, echo_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def info(app: App, as_json: bool) -> None:
    """Show vkrama's version, podman's version and socket, config files and state paths."""
    engine = app.engine.info()
    config_files = [str(path) for path in app.settings.files_read]
    data = {
        "vkrama": __version__,
        "engine": engine,
        "config_files": config_files,
        "home": str(app.settings.home),
        "offline": app.settings.offline,
    }
    if as_json:
        echo_json(data)
        return
    started = " (started by vkrama, exits when idle)" if engine.started_service else ""
    echo_table(
        [
            ("vkrama", __version__),
            ("podman", f"{engine.version} (API {engine.api_version})"),
            ("socket", f"{engine.url} [{engine.source}]{started}"),
            ("OCI runtime", engine.oci_runtime),
            ("storage", engine.storage_driver),
            ("rootless", "yes" if engine.rootless else "no"),
            ("config files", ", ".join(config_files) or "none"),
            ("home (VKRAMA_HOME)", data["home"]),
            ("offline", "yes" if app.settings.offline else "no"),
        ],
        tablefmt="plain",
    )
