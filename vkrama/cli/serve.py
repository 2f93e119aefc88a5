"""`vkrama serve`: flags ─► a `ServeRequest` ─► one call into `vkrama.serve` ─► the console.

Stage: CLI shell over `vkrama.serve.lifecycle` (start, follow in the foreground) and
`vkrama.deploy` (--generate). Prints the dry run, the name and URL, the server's log;
the choices, the waiting and the exit policy live in `vkrama.serve`.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vkrama import deploy
from vkrama.cli import console
from vkrama.cli.app import App, dry_run_option, pass_app, terminate_as_interrupt
from vkrama.cli.flags import port_type, rpc_option, serve_flags
from vkrama.cli.progress import reporting
from vkrama.cli.types import refuse_ignored
from vkrama.serve import containers, lifecycle, session
from vkrama.serve.plan import ServeRequest

if TYPE_CHECKING:
    from vkrama.backends import GpuSelection


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- LLAMA_SERVER_ARGS]")
@serve_flags
@click.option(
    "--port",
    type=port_type,
    default=None,
    metavar="P|auto",
    help="Host port (default: settings serve.port); auto picks a free one.",
)
@click.option("--host", metavar="H", help="Host address to publish on (default: 127.0.0.1).")
@click.option("--name", metavar="N", help="Container name (default: vkrama-ALIAS-PORT).")
@click.option(
    "-d", "--detach", is_flag=True,
    help="Return once ready; print name and URL. (-d is podman's --detach here; in bench and "
    "tune it is llama-bench's --depth.)",
)  # fmt: skip
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    metavar="N",
    help="Requests served at once (llama-server slots).",
)
@click.option("--alias", metavar="NAME", help="Model name clients use (default: the model's).")
@click.option(
    "--rank-by",
    default="tg",
    show_default=True,
    metavar="METRIC",
    help="What --backend best ranks stored results by: tg, pp (llama-bench t/s), "
    "serve:tps@N (`bench --serve` total tokens/s at N clients) or capacity (the highest "
    "request rate within `bench --serve --slo`; goodput means the same here) or joules (the "
    "least J/token above idle in generation, among stacks whose output check said ok).",
)
@click.option(
    "--api-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="F",
    help="Require this key (first line of F) from clients; never printed.",
)
@click.option(
    "--generate",
    type=click.Choice(deploy.KINDS),
    help="Write Kubernetes, quadlet or compose files for this server instead of starting it.",
)
@click.option(
    "-o", "--output", "out_dir", type=click.Path(path_type=Path, file_okay=False),
    default=Path("."), show_default=True, metavar="DIR", help="Where --generate writes.",
)  # fmt: skip
@click.option(
    "--replicas", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
    help="Pods of the Kubernetes Deployment (--generate kube).",
)  # fmt: skip
@click.option(
    "--rpc-workers", "rpc_split", type=click.IntRange(min=1), default=None, metavar="N",
    help="With --generate: split the model over N ggml RPC workers that hold every layer "
    "(the backend's GPUs, on other hosts) and a leader running llama-server: kube writes a "
    "LeaderWorkerSet and a NetworkPolicy, compose and quadlet a leader file and a worker file.",
)  # fmt: skip
@click.option(
    "--json", "as_json", is_flag=True,
    help="With -d: the server as JSON (name, id, url, alias); with --dry-run: the commands.",
)  # fmt: skip
@rpc_option(
    "Spread the model over these ggml RPC workers (`vkrama rpc-worker`); the local "
    "backend's GPUs take a share too (default backend: cpu, the workers take all layers)."
)
@dry_run_option
@pass_app
def serve(
    app: App, model: str, extra_args: tuple[str, ...], backend: str | None, gpu: GpuSelection,
    split_mode: str | None, tensor_split: tuple[float, ...],
    vk_driver: str | None, ctx_size: int | None, ngl: int | None, timeout: float | None,
    port: int | str | None, host: str | None, name: str | None, detach: bool,
    parallel: int | None, alias: str | None, rank_by: str, api_key_file: Path | None,
    generate: str | None, out_dir: Path, replicas: int, rpc_split: int | None, as_json: bool,
    rpc_workers: tuple[str, ...],
) -> None:  # fmt: skip
    """Serve MODEL with llama-server's OpenAI API in the best (or chosen) backend image.

    Foreground by default: logs stream until Ctrl-C, which stops and removes the
    container. Arguments after `--` go to llama-server unchanged.
    """
    ctx = click.get_current_context()
    if not generate:
        refuse_ignored(ctx, ["out_dir", "replicas", "rpc_split"], "with --generate")
    elif generate != "kube":
        refuse_ignored(ctx, ["replicas"], "with --generate kube")
    if not (detach or app.dry_run) or generate:
        refuse_ignored(ctx, ["as_json"], "with -d or --dry-run")
    settings = app.settings
    if (backend or settings["serve.backend"]) != "best":
        refuse_ignored(ctx, ["rank_by"], "with --backend best")
    request = ServeRequest(
        model=model, backend=backend or settings["serve.backend"], gpu=gpu,
        split_mode=split_mode, tensor_split=tensor_split, vk_driver=vk_driver,
        port=port if port is not None else settings["serve.port"],
        host=host or settings["serve.host"], name=name, ctx_size=ctx_size, ngl=ngl,
        parallel=parallel, alias=alias, api_key_file=api_key_file, extra_args=extra_args,
        rank_by=rank_by, timeout=timeout, rpc=rpc_workers,
    )  # fmt: skip
    if generate:
        with reporting(app.verbose) as reporter:
            generated = deploy.for_serve(
                settings, request, generate, out_dir, replicas, reporter, rpc_split or 0
            )
        console.echo_generated(generated, out_dir, app.dry_run, "start it with:")
        return
    if app.dry_run:
        with reporting(app.verbose) as reporter:
            planned = session.plan(settings, request, on_progress=reporter)
        echo_dry_run(planned, request, as_json)
        return
    with terminate_as_interrupt(), reporting(app.verbose) as reporter, log_tail_on_failure():
        running = lifecycle.start(settings, app.engine, request, reporter)
        if detach:
            reporter.close()
            if as_json:
                console.echo_json({"name": running.name, "id": running.id, "url": running.url,
                                   "alias": running.alias})  # fmt: skip
            else:
                click.echo(f"{running.name} {running.url}")
            return
        lifecycle.follow(app.engine, running, click.echo, reporter)


def echo_dry_run(planned: session.Planned, request: ServeRequest, as_json: bool = False) -> None:
    # The key file's first line is the key; the value itself is never printed.
    source = shlex.quote(str(request.api_key_file))
    secrets = [f"head -n 1 {source} | podman secret create {one.name} -"
               for one in planned.spec.secrets]  # fmt: skip
    prelude = console.dry_run_prelude(planned.spec)
    if as_json:  # bench's and tune's --dry-run --json keys, plus the secrets' lines
        console.echo_json({"secrets": secrets, "prepare": prelude,
                           "command": planned.spec.podman_argv(detach=True)})  # fmt: skip
        return
    for line in [*secrets, *prelude]:
        click.echo(line)
    click.echo(planned.spec.podman_command(detach=True))


@contextlib.contextmanager
def log_tail_on_failure() -> Iterator[None]:
    """A server that never became ready: its last log lines above the error."""
    try:
        yield
    except containers.ServerFailed as failed:
        if failed.log_tail:
            click.echo("--- last lines of llama-server's log ---", err=True)
            for line in failed.log_tail:
                click.echo(f"  {line}", err=True)
        raise
