"""`vkrama rpc-worker`: this host's devices offered to a leader (`serve --rpc`) through
ggml's RPC server, in a backend's image.

Stage: CLI shell over `vkrama.serve.rpc`: flags ─► a `WorkerRequest` ─► one call ─► the
console. Prints the dry run, the no-authentication warning and the worker's address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vkrama.cli import console
from vkrama.cli.app import App, dry_run_option, pass_app, terminate_as_interrupt
from vkrama.cli.flags import BACKEND_CHOICES, GPU_HELP, gpu_type
from vkrama.cli.progress import reporting
from vkrama.cli.serve import log_tail_on_failure
from vkrama.cli.types import Duration
from vkrama.serve import rpc, workers

if TYPE_CHECKING:
    from vkrama.backends import GpuSelection

UNAUTHENTICATED = (
    "warning: ggml's RPC protocol has no authentication and no encryption: anyone who "
    "reaches {endpoint} can run code on this host's devices and read what they hold. "
    "Bind it only to a network that the leader alone reaches."
)


@click.command("rpc-worker", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--backend", type=click.Choice(BACKEND_CHOICES[:-1]), default="auto",
              show_default=True, help="Backend image whose devices the worker offers.")  # fmt: skip
@click.option("--gpu", metavar="N|N,M|all", callback=gpu_type(), help=GPU_HELP)
@click.option("--vk-driver", metavar="D", help="Vulkan driver: radv, anv, nvk, nvidia or lavapipe.")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Address rpc-server listens on. Anything but loopback is reachable by "
              "others, and RPC has no authentication.")  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=rpc.DEFAULT_PORT,
              show_default=True, metavar="P", help="Port rpc-server listens on.")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), metavar="N",
              help="Threads of a CPU device (default: rpc-server's, half the cores).")  # fmt: skip
@click.option("--name", metavar="N", help="Container name (default: vkrama-rpc-BACKEND-PORT).")
@click.option("--timeout", type=Duration(0, open=True), default="120s", show_default=True,
              metavar="TIME", help="How long to wait until it listens (90s, 10m).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the worker as JSON.")
@dry_run_option
@pass_app
def rpc_worker(
    app: App, backend: str, gpu: GpuSelection, vk_driver: str | None, host: str, port: int,
    threads: int | None, name: str | None, timeout: float, as_json: bool,
) -> None:  # fmt: skip
    """Offer this host's devices to a leader (`vkrama serve MODEL --rpc HOST:PORT`).

    Starts ggml's rpc-server in the backend's image, with the devices passed as `serve`
    passes them, detached: `vkrama ps` lists it and `vkrama stop NAME` removes it. Tensors a
    leader sends are cached under $VKRAMA_HOME/cache/rpc.
    """
    request = rpc.WorkerRequest(backend, gpu, vk_driver, host, port, name, threads)
    endpoint = rpc.Endpoint(host, port)
    if not rpc.is_loopback(host):
        click.echo(UNAUTHENTICATED.format(endpoint=endpoint), err=True)
    settings = app.settings
    if app.dry_run:
        with reporting(app.verbose) as reporter:
            planned = rpc.prepare_worker(settings, request, None, reporter)
        for line in console.dry_run_prelude(planned.spec):
            click.echo(line)
        click.echo(planned.spec.podman_command(detach=True))
        return
    with terminate_as_interrupt(), reporting(app.verbose) as reporter, log_tail_on_failure():
        running = workers.start_worker(settings, app.engine, request, timeout, reporter)
        reporter.close()
    if as_json:
        console.echo_json(
            {
                "name": running.name,
                "id": running.id,
                "endpoint": str(running.endpoint),
                "backend": running.choice.backend,
                "driver": running.choice.driver,
                "device": running.choice.device_label,
                "ready_s": round(running.ready_s, 2),
            }
        )
        return
    click.echo(f"{running.name} {running.endpoint}")
