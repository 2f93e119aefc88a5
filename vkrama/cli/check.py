"""`vkrama check`: each stack's next-token distributions against the CPU's, one row each.

Stage: CLI shell over `vkrama.bench.check`. Parses flags into a `CheckRequest` (cells
chosen as `bench` chooses them), prints each server's podman command on --dry-run,
progress on stderr, then the table or JSON. The exit code says whether every stack passed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vkrama.bench import check as checking
from vkrama.bench import check_store
from vkrama.bench.matrix import BenchRequest
from vkrama.cli.app import App, dry_run_option, pass_app, terminate_as_interrupt
from vkrama.cli.bench import BACKENDS, VK_DRIVERS, _env
from vkrama.cli.console import dry_run_prelude, echo_json, echo_table
from vkrama.cli.flags import gpu_flags
from vkrama.cli.progress import reporting
from vkrama.cli.types import Duration
from vkrama.errors import ExitStatus
from vkrama.results.records import note

if TYPE_CHECKING:
    from vkrama.backends import GpuSelection


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.argument("server_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- LLAMA_SERVER_ARGS]")
@click.option("--backend", "backends", type=BACKENDS, default=(), metavar="B1,B2",
              help="Backends, as for bench.")  # fmt: skip
@click.option("--all", "every", is_flag=True, help="Every backend/driver usable here, as bench.")
@click.option("--vk-driver", "vk_drivers", type=VK_DRIVERS, default=(), metavar="D1,D2",
              help="Vulkan drivers, as for bench.")  # fmt: skip
@gpu_flags(bench=True)
@click.option(
    "--context", type=click.IntRange(min=1), default=checking.CheckParams.context,
    show_default=True, metavar="N", help="Text tokens sent at once before the first scored one.",
)  # fmt: skip
@click.option(
    "--positions", type=click.IntRange(min=1), default=checking.CheckParams.positions,
    show_default=True, metavar="N", help="Next-token positions scored.",
)  # fmt: skip
@click.option(
    "--top-k", type=click.IntRange(min=2), default=checking.CheckParams.top_k,
    show_default=True, metavar="K", help="Probabilities compared per position (n_probs).",
)  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), metavar="N",
              help="The CPU reference's threads (default: physical cores).")  # fmt: skip
@click.option("--timeout", type=Duration(0, open=True), metavar="TIME",
              help="Time a server may take to start (default: bench.timeout).")  # fmt: skip
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Extra environment.")
@click.option("--unset-env", multiple=True, metavar="KEY", help="Drop a variable.")
@click.option("--json", "as_json", is_flag=True, help="Rows as JSON.")
@click.option("--no-save", is_flag=True, help="Do not store the verdicts.")
@dry_run_option
@pass_app
def check(
    app: App,
    model: str,
    server_args: tuple[str, ...],
    backends: tuple[str, ...],
    every: bool,
    vk_drivers: tuple[str, ...],
    gpu: GpuSelection,
    split_mode: str | None,
    tensor_split: tuple[float, ...],
    context: int,
    positions: int,
    top_k: int,
    threads: int | None,
    timeout: float | None,
    env: tuple[str, ...],
    unset_env: tuple[str, ...],
    as_json: bool,
    no_save: bool,
) -> int:
    """Check that each stack computes what the CPU computes on MODEL.

    Each stack's llama-server scores the bundled public-domain text token by token (the
    reference's tokens, teacher-forced); its next-token distributions are compared with
    the CPU's (cached per model and llama.cpp build): KL divergence mean and p99, top-1
    agreement, and a verdict: ok, drift or wrong (docs/output-check.md). Arguments after
    `--` go to every checked stack's llama-server (e.g. `-- -fa on -ctk q8_0 -ctv q8_0`),
    never to the reference. Exit code 0 only when every stack is ok.
    """
    request = checking.CheckRequest(
        cells=BenchRequest(
            model=model, backends=backends, vk_drivers=vk_drivers, every=every,
            gpu=gpu, split_mode=split_mode, tensor_split=tensor_split, env=_env(env),
            unset_env=unset_env,
        ),
        params=checking.CheckParams(context, positions, top_k),
        server_args=server_args,
        threads=threads,
        timeout=timeout,
        save=not no_save,
    )  # fmt: skip
    if app.dry_run:
        planned = checking.plan(app.settings, request)
        cells = [planned.reference, *planned.cells]
        if as_json:
            echo_json([{"backend": c.backend, "driver": c.driver, "reference": n == 0,
                        "command": c.spec.podman_argv()} for n, c in enumerate(cells)])  # fmt: skip
        for n, cell in enumerate([] if as_json else cells):
            click.echo(f"# {'the CPU reference (unless cached)' if n == 0 else cell.key}")
            for line in dry_run_prelude(cell.spec):
                click.echo(line)
            click.echo(cell.spec.podman_command())
        for failed in planned.unavailable:
            click.echo(f"# {failed.backend}: {note(failed.status, failed.reason)}", err=True)
        return int(ExitStatus.OK)
    with terminate_as_interrupt(), reporting(app.verbose) as reporter:
        planned = checking.prepare(app.settings, request, app.engine, on_progress=reporter)
        outcome = check_store.run(app.engine, app.settings, planned, on_progress=reporter)
    if as_json:
        echo_json(outcome.as_dict())
    else:
        echo_table(
            [(r.backend, r.driver or "-", r.device, *_figures(r), r.verdict) for r in outcome.rows],
            headers=("backend", "driver", "device", "KL mean", "KL p99", "top-1", "verdict"),
        )
        for line in outcome.lines():
            click.echo(line)
    return int(ExitStatus.OK if outcome.all_ok else ExitStatus.BENCH_FAILED)


def _figures(row: checking.CheckRow) -> tuple[str, str, str]:
    found = row.divergence
    if found is None:
        return ("-", "-", "-")
    top1 = f"{100 * found.top1:.1f}%"
    return (f"{found.kl_mean:.2e}", f"{found.kl_p99:.2e}", top1)
