"""`vkrama serve`, `ps`, `stop`, `logs`: run llama-server containers and manage them.

Stage: CLI shell over `vkrama.serve.session`. Parses flags into `ServeOptions`, renders progress,
tables and log lines; the pipeline itself lives in `vkrama.serve`.
Over 300 lines because the serve lifecycle (start, follow, exit policy) and --generate
still sit here until they move to serve.session.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from vkrama import deploy
from vkrama.cli import console
from vkrama.cli.app import App, dry_run_option, pass_app
from vkrama.cli.progress import reporting
from vkrama.errors import ExitStatus, VkramaError
from vkrama.serve import containers, session

if TYPE_CHECKING:
    from vkrama.backends import GpuSelection

BACKEND_CHOICES = ("auto", "cpu", "vulkan", "rocm", "cuda", "oneapi", "best")
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def port_type(value: str) -> int | str:
    """--port: a number in 1..65535, or "auto"."""
    if value == "auto":
        return value
    if value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    raise click.BadParameter(f"{value!r} is not a port (1-65535) or 'auto'")


def gpu_type(
    allow_each: bool = False,
) -> Callable[[click.Context, click.Parameter, str | None], object]:
    """--gpu: N, a list N,M (one model split over them, in that order), all (bench: each)."""

    def parse(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
        from vkrama.backends import parse_gpus

        return parse_gpus(value, allow_each=allow_each)

    return parse


def tensor_split_type(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
    from vkrama.backends import check_split

    return check_split(None, value)[1]


GPU_HELP = "GPU index, or a list 0,1 / all to split the model over several (see `vkrama devices`)."
SPLIT_MODE_HELP = "How a model is split over several GPUs (llama.cpp --split-mode; default layer)."
TENSOR_SPLIT_HELP = (
    "Share of the model per GPU, in --gpu's order, e.g. 3,1 (default: by each GPU's memory "
    "where the driver tells it, else llama.cpp's split by free memory)."
)


def split_flags(command: Callable[..., object]) -> Callable[..., object]:
    """--split-mode and --tensor-split, shared by serve, run and bench."""
    command = click.option(
        "--tensor-split", metavar="W1,W2", callback=tensor_split_type, help=TENSOR_SPLIT_HELP
    )(command)
    return click.option(
        "--split-mode", type=click.Choice(("layer", "row", "none")), help=SPLIT_MODE_HELP
    )(command)


def serve_flags(command: Callable[..., object]) -> Callable[..., object]:
    """Flags shared by `serve` and `run`: which backend and device, and llama-server's knobs."""
    decorators: list[Callable[[Callable[..., object]], Callable[..., object]]] = [
        click.option("--backend", type=click.Choice(BACKEND_CHOICES), default=None,
                     help="Backend image to serve with (default: settings serve.backend)."),
        click.option("--gpu", metavar="N|N,M|all", callback=gpu_type(), help=GPU_HELP),
        split_flags,
        click.option("--vk-driver", metavar="D",
                     help="Vulkan driver: radv, anv, nvk, nvidia or lavapipe."),
        click.option("--ctx-size", type=click.IntRange(min=1), metavar="N",
                     help="Context size in tokens (default: the model's)."),
        click.option("--ngl", type=click.IntRange(min=0), metavar="N",
                     help="Layers to offload (default: all on a GPU backend, 0 on cpu)."),
        click.option("--timeout", type=click.FloatRange(min=0), metavar="S",
                     help="Seconds to wait until ready (default: settings serve.timeout)."),
    ]  # fmt: skip
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


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
@click.option("-d", "--detach", is_flag=True, help="Return once ready; print name and URL.")
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
    help="What --backend best ranks stored results by: tg, pp (llama-bench t/s) or "
    "serve:tps@N (`bench --serve` total tokens/s at N clients).",
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
@dry_run_option
@pass_app
def serve(
    app: App, model: str, extra_args: tuple[str, ...], backend: str | None, gpu: GpuSelection,
    split_mode: str | None, tensor_split: tuple[float, ...],
    vk_driver: str | None, ctx_size: int | None, ngl: int | None, timeout: float | None,
    port: int | str | None, host: str | None, name: str | None, detach: bool,
    parallel: int | None, alias: str | None, rank_by: str, api_key_file: Path | None,
    generate: str | None, out_dir: Path, replicas: int,
) -> None:  # fmt: skip
    """Serve MODEL with llama-server's OpenAI API in the best (or chosen) backend image.

    Foreground by default: logs stream until Ctrl-C, which stops and removes the
    container. Arguments after `--` go to llama-server unchanged.
    """
    settings = app.settings
    options = session.ServeOptions(
        model=model,
        backend=backend or settings["serve.backend"],
        gpu=gpu,
        split_mode=split_mode,
        tensor_split=tensor_split,
        vk_driver=vk_driver,
        port=port if port is not None else settings["serve.port"],
        host=host or settings["serve.host"],
        name=name,
        ctx_size=ctx_size,
        ngl=ngl,
        parallel=parallel,
        alias=alias,
        api_key_file=api_key_file,
        extra_args=extra_args,
        rank_by=rank_by,
    )
    if generate:
        write_deployment(app, options, generate, out_dir, replicas)
        return
    if app.dry_run:
        with reporting(app.verbose) as reporter:
            planned = session.prepare(settings, options, None, on_progress=reporter)
        for secret in planned.spec.secrets:
            # The key file's first line is the key; the value itself is never printed.
            source = shlex.quote(str(api_key_file))
            click.echo(f"head -n 1 {source} | podman secret create {secret.name} -")
        for line in console.dry_run_prelude(planned.spec):
            click.echo(line)
        click.echo(planned.spec.podman_command(detach=True))
        return
    with terminate_as_interrupt():
        running = start(app, options, timeout)
        if detach:
            click.echo(f"{running.name} {running.url}")
            return
        follow_until_interrupted(app, running)


def write_deployment(
    app: App, options: session.ServeOptions, kind: str, out_dir: Path, replicas: int
) -> None:
    """Plan exactly as `serve` does (starting nothing), then write the files for `kind`;
    under --dry-run print them instead."""
    with reporting(app.verbose) as reporter:
        planned = session.prepare(app.settings, options, None, on_progress=reporter)
    work = deploy.workload(planned, options.model, replicas, options.api_key_file)
    generated = deploy.render(kind, work, out_dir)
    if app.dry_run:
        for name, text in generated.files.items():
            click.echo(f"# --- {out_dir / name} (not written: --dry-run)")
            click.echo(text.rstrip("\n"))
        return
    for path in deploy.write(generated, out_dir):
        click.echo(f"wrote {path}")
    click.echo("start it with:")
    for line in generated.start:
        click.echo(f"  {line}")


def start(app: App, options: session.ServeOptions, timeout: float | None) -> session.Running:
    """Plan, start and wait with a spinner; on failure show the server's last log lines."""
    with reporting(app.verbose) as reporter:
        planned = session.prepare(app.settings, options, app.engine, on_progress=reporter)
    wait_s = timeout if timeout is not None else float(app.settings["serve.timeout"])
    with spinner(f"starting {planned.spec.name}") as tick:
        try:
            running = session.launch(app.engine, planned, wait_s, on_tick=tick)
        except session.ServerFailed as failed:
            if failed.log_tail:
                click.echo("--- last lines of llama-server's log ---", err=True)
                for line in failed.log_tail:
                    click.echo(f"  {line}", err=True)
            raise
    if app.verbose:
        say(f"ready in {running.ready_s:.2f} s")
    return running


def follow_until_interrupted(app: App, running: session.Running) -> None:
    """Stream the log until Ctrl-C or SIGTERM; either way the container goes."""
    say(f"Serving {running.alias} at {running.url}/v1 as {running.name} (Ctrl-C stops it)")
    engine = app.engine
    try:
        with contextlib.suppress(containers.ContainerGone):
            for line in containers.follow_log(engine, running.id):
                click.echo(line)
        code = containers.exit_code(engine, running.id)
        # Gone, or a clean exit: `vkrama stop` (or podman stop) from elsewhere, which
        # stops it before removing it; llama-server only exits 0 when asked to.
        if code in (None, 0):
            say(f"{running.name} was stopped")
            return
        raise VkramaError(
            f"{running.name} exited with code {code}",
            hint="its log is above; `vkrama serve ... --backend cpu` rules out the GPU",
            status=ExitStatus.CONTAINER_EXITED,
        )
    except KeyboardInterrupt:
        say(f"Stopping {running.name}")
    finally:
        engine.remove(running.id)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemd, `kill`, a supervisor) and SIGHUP (the terminal closed, a tmux
    session killed) take the same clean path as Ctrl-C.

    SIGINT is set too: a shell starts background jobs with SIGINT ignored, and a server
    must still stop cleanly when someone sends it one.
    """

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    caught = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, interrupt) for sig in caught}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def spinner(label: str) -> Iterator[Callable[[float], None]]:
    """A spinner on stderr when it is a terminal; a no-op callback otherwise."""
    if not sys.stderr.isatty():
        yield lambda _elapsed: None
        return
    last = [0.0]

    def tick(elapsed: float) -> None:
        if elapsed - last[0] < 0.1:
            return
        last[0] = elapsed
        frame = SPINNER[int(elapsed * 10) % len(SPINNER)]
        click.echo(f"\r{frame} {label} ({elapsed:.1f} s)", err=True, nl=False)

    try:
        yield tick
    finally:
        click.echo("\r\033[K", err=True, nl=False)


def say(message: str) -> None:
    click.echo(message, err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_app
def ps(app: App, as_json: bool) -> None:
    """List vkrama servers (from container labels)."""
    rows = containers.list_servers(app.engine)
    if as_json:
        console.echo_json([server_json(row) for row in rows])
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


def server_json(row: containers.ServerRow) -> dict[str, object]:
    return {
        "name": row.name,
        "id": row.id,
        "model": row.model,
        "alias": row.alias,
        "backend": row.backend,
        "driver": row.driver or None,
        "device": row.device,
        "url": row.url,
        "state": row.state,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "uptime_s": round(uptime, 1) if (uptime := row.uptime_s()) is not None else None,
    }


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
