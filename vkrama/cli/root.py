"""The `vkrama` command: its global flags, its subcommands (imported lazily so that
`vkrama --help` stays fast) and `main`, the one place that prints `Error: … / Hint: …`
and turns errors into exit codes.

Stage: CLI, the outer shell of the pipeline. Never handles a command's own work: each
subcommand lives in its own module of this package.
"""

from __future__ import annotations

import errno
import importlib
import sys
from typing import NoReturn

import click

from vkrama import __version__
from vkrama.cli.app import App
from vkrama.errors import FULL, ExitStatus, VkramaError, disk_error

# name -> "module:attribute"; each module is imported only when its command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "images": ("vkrama.cli.images:images_group", "Build, list, save and load the backend images."),
    "info": ("vkrama.cli.info:info", "Show vkrama, podman and state paths."),
    "config": ("vkrama.cli.config:config", "Show the effective configuration."),
    "devices": ("vkrama.cli.devices:devices", "List GPUs and the backends each can use, and why."),
    "doctor": ("vkrama.cli.devices:doctor_command", "Check podman, devices, CDI; say fixes."),
    "serve": ("vkrama.cli.serve:serve", "Serve a model with llama-server's OpenAI API."),
    "rpc-worker": (
        "vkrama.cli.rpc:rpc_worker",
        "Offer this host's devices to `serve --rpc` (ggml's rpc-server).",
    ),
    "ps": ("vkrama.cli.servers:ps", "List vkrama servers."),
    "stop": ("vkrama.cli.servers:stop", "Stop and remove vkrama servers."),
    "logs": ("vkrama.cli.servers:logs", "Print a vkrama server's log."),
    "run": ("vkrama.cli.run:run", "Answer a prompt or chat with a model (starts a server)."),
    "pull": ("vkrama.cli.models:pull", "Fetch a GGUF model (hf://, ollama://, oci://, URL, file)."),
    "list": ("vkrama.cli.models:list_", "List stored models with their GGUF facts."),
    "inspect": ("vkrama.cli.models:inspect", "Show a model's files, sha256 and GGUF metadata."),
    "rm": ("vkrama.cli.models:rm", "Remove a model from the store."),
    "check": ("vkrama.cli.check:check", "Check each stack's output against the CPU's."),
    "bench": ("vkrama.cli.bench:bench", "Bench a model across backends and Vulkan drivers."),
    "results": ("vkrama.cli.results:results_group", "List, show, compare and export bench runs."),
    "tune": ("vkrama.cli.tune:tune", "Search each stack's fastest llama-bench flags for a model."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, attribute = COMMANDS[cmd_name][0].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help lines come from COMMANDS so that --help imports nothing.
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vkrama")
@click.option("-v", "--verbose", count=True, help="Show more (tracebacks of errors, engine calls).")
@click.option("--dry-run", is_flag=True, help="Print the podman commands instead of running them.")
@click.option("--offline", is_flag=True, default=None, help="Never touch the network.")
@click.option(
    "--engine-url", metavar="URL", help="podman API socket, e.g. unix:///run/podman/podman.sock."
)
@click.pass_context
def cli(
    ctx: click.Context, verbose: int, dry_run: bool, offline: bool | None, engine_url: str | None
) -> None:
    """vkrama: which GPU stack runs your model fastest? Build, bench and serve llama.cpp
    images for Mesa Vulkan (RADV, ANV, NVK, lavapipe), ROCm, CUDA, oneAPI and CPU."""
    ctx.obj = App(
        overrides={"offline": offline, "engine.url": engine_url},
        verbose=verbose,
        dry_run=dry_run,
    )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn errors into one `Error:`/`Hint:` block and an exit code."""
    parsed: list[App] = []  # the App of this run, once the global flags are parsed
    try:
        result = _run(argv, parsed)
        sys.exit(result if isinstance(result, int) else int(ExitStatus.OK))
    except VkramaError as error:
        # -v/-vv as click counted them: scanning argv missed -vv and took `-- -v` for ours.
        _fail(error, bool(parsed and parsed[0].verbose))
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(int(ExitStatus.INTERRUPTED))
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(int(ExitStatus.INTERRUPTED))
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(
            int(ExitStatus.USAGE) if isinstance(error, click.UsageError) else int(ExitStatus.ERROR)
        )
    except BrokenPipeError:
        sys.exit(int(ExitStatus.OK))
    except OSError as exc:
        # A full or read-only file system that no stage translated (each stage that writes
        # translates its own, with cleanup): still the user's to fix, not a traceback.
        disk = disk_error(exc, "vkrama", "VKRAMA_HOME") if exc.errno in DISK_ERRNOS else None
        if disk is None:
            raise
        _fail(disk, bool(parsed and parsed[0].verbose))


DISK_ERRNOS = (*FULL, errno.EROFS)


def _fail(error: VkramaError, verbose: bool) -> NoReturn:
    click.echo(f"Error: {error.message}", err=True)
    if error.hint:
        click.echo(f"Hint: {error.hint}", err=True)
    if verbose:
        raise error
    sys.exit(int(error.status))


def _run(argv: list[str] | None, parsed: list[App]) -> object:
    """click's own main (standalone_mode=False), keeping the App it made for `main`."""
    args = list(sys.argv[1:] if argv is None else argv)
    with cli.make_context("vkrama", args) as ctx:
        try:
            return cli.invoke(ctx)
        finally:
            if isinstance(ctx.obj, App):
                parsed.append(ctx.obj)
