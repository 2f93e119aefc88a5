"""`vkrama bench`: one command benches a model across backends and Vulkan drivers.

Stage: CLI shell over `vkrama.bench.session`. Parses flags into a `BenchRequest`, prints
each cell's podman command on --dry-run, progress on stderr, then the table or JSON.

Over 300 lines because one command carries two benchmarks' flags: llama-bench's and the
serving bench's (--serve, --concurrency, --request-rate, --slo, --sweep, ...); the logic
below the flags stays a few lines.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vkrama.bench import remote, session
from vkrama.bench.matrix import BenchRequest
from vkrama.bench.plan import FLASH_ATTN_VALUES, BenchParams
from vkrama.bench.serving import ServeParams
from vkrama.cli.app import App, dry_run_option, pass_app, terminate_as_interrupt
from vkrama.cli.console import dry_run_prelude, echo_generated, echo_json
from vkrama.cli.flags import gpu_flags, rpc_option
from vkrama.cli.progress import reporting
from vkrama.cli.serve_flags import serving_flags
from vkrama.cli.types import CommaList, Duration, natural, refuse_ignored
from vkrama.deploy import fleet
from vkrama.errors import ExitStatus, VkramaError
from vkrama.results import report
from vkrama.results.records import RunStatus, note

if TYPE_CHECKING:
    from vkrama.backends import GpuSelection


def _flash_attn(value: str) -> str:
    """llama-bench's own spelling (-fa 0,1) is accepted and stored as on/off."""
    value = {"1": "on", "0": "off"}.get(value, value)
    if value not in FLASH_ATTN_VALUES:
        raise ValueError  # the list type's message names every value
    return value


BACKENDS = CommaList(what="a list of backends", example="cpu,vulkan")
VK_DRIVERS = CommaList(what="a list of Vulkan drivers", example="radv,lavapipe")
DEPTHS = CommaList(natural(0), what="a list of token counts", example="0,4096,16384")
# With --serve, llama-server runs and these llama-bench flags would be ignored.
LLAMA_BENCH_ONLY = ("n_prompt", "n_gen", "repetitions", "ngl", "fa", "depth", "threads")
SERVE_SAYS = {
    "n_prompt": "--serve sends --prompt-tokens tokens a request; drop -p",
    "n_gen": "--serve generates --gen-tokens tokens a request; drop -n",
}


def _env(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise VkramaError(
                f"--env {pair!r} is not KEY=VALUE",
                hint="e.g. --env GGML_VK_VISIBLE_DEVICES=0; --unset-env KEY removes one",
                status=ExitStatus.USAGE,
            )
        env[key] = value
    return env


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False)
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- LLAMA_BENCH_ARGS]")
@click.option(
    "--backend", "backends", type=BACKENDS, default=(), metavar="B1,B2",
    help="Backends: cpu,vulkan,rocm,cuda,oneapi.",
)  # fmt: skip
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="Every backend/driver usable here, lavapipe and the SYCL CPU device included "
    "(default: the same, but lavapipe only on machines without a GPU, and the SYCL CPU "
    "device only with --backend oneapi).",
)
@click.option(
    "--vk-driver",
    "vk_drivers",
    type=VK_DRIVERS,
    default=(),
    metavar="D1,D2",
    help="Vulkan drivers: radv,anv,nvk,nvidia,lavapipe.",
)
@gpu_flags(bench=True)
@click.option(
    "-p",
    "--n-prompt",
    type=click.IntRange(min=0),
    metavar="N",
    default=512,
    show_default=True,
    help="Prompt tokens (pp test).",
)
@click.option(
    "-n",
    "--n-gen",
    type=click.IntRange(min=0),
    metavar="N",
    default=128,
    show_default=True,
    help="Generated tokens (tg test).",
)
@click.option(
    "-r",
    "--repetitions",
    type=click.IntRange(min=1),
    metavar="N",
    default=5,
    show_default=True,
    help="Repetitions per test.",
)
@click.option(
    "--ngl",
    type=click.IntRange(min=0),
    metavar="N",
    help="Layers offloaded (default: all on GPU cells, 0 on cpu).",
)
@click.option(
    "--fa",
    "--flash-attn",
    "fa",
    type=CommaList(_flash_attn, what="a list of on, off, auto (or 1, 0)", example="on,off"),
    default=(),
    metavar="on,off",
    help="Flash attention values to test (llama-bench -fa; 1/0 mean on/off).",
)
@click.option(
    "-d",
    "--depth",
    "depth",
    type=DEPTHS,
    default=(),
    metavar="D1,D2",
    help="Context depths to test at (llama-bench -d): tokens already in the KV cache.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    metavar="N",
    help="CPU threads (default: physical cores).",
)
@click.option(
    "--timeout",
    type=Duration(0, open=True),
    metavar="TIME",
    help="Time per cell, e.g. 30m or 90s; a bare number is seconds (default: settings "
    "bench.timeout).",
)
@click.option(
    "--env", "env", multiple=True, metavar="KEY=VALUE", help="Extra environment for every cell."
)
@click.option(
    "--unset-env",
    multiple=True,
    metavar="KEY",
    help="Drop a variable from every cell's environment.",
)
@serving_flags
@rpc_option(
    "Add a cell split over these ggml RPC workers (`vkrama rpc-worker`): llama-bench in the "
    "cpu image, every layer on the workers; the verdict says what the split costs."
)
@click.option(
    "--tuned", is_flag=True,
    help="Each test at the flags `vkrama tune` found for it on the cell's stack; flags you"
    " give win (verdicts say so).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Rows as JSON.")
@click.option("--no-save", is_flag=True, help="Do not store the run.")
@click.option(
    "--no-check", is_flag=True,
    help="Skip the output check against the CPU (`vkrama check`) of stacks not yet checked.",
)  # fmt: skip
@click.option(
    "--generate", type=click.Choice(["kube"]),
    help="Write a Kubernetes Job per cell (run on cluster nodes) instead of benching here.",
)  # fmt: skip
@click.option(
    "-o", "--output", "out_dir", type=click.Path(path_type=Path, file_okay=False),
    default=Path("."), show_default=True, metavar="DIR", help="Where --generate writes.",
)  # fmt: skip
@dry_run_option
@pass_app
def bench(
    app: App,
    model: str | None,
    extra_args: tuple[str, ...],
    backends: tuple[str, ...],
    every: bool,
    vk_drivers: tuple[str, ...],
    gpu: GpuSelection,
    split_mode: str | None,
    tensor_split: tuple[float, ...],
    n_prompt: int,
    n_gen: int,
    repetitions: int,
    ngl: int | None,
    fa: tuple[str, ...],
    depth: tuple[int, ...],
    threads: int | None,
    timeout: float | None,
    env: tuple[str, ...],
    unset_env: tuple[str, ...],
    serve: ServeParams | None,
    tuned: bool,
    as_json: bool,
    no_save: bool,
    no_check: bool,
    generate: str | None,
    out_dir: Path,
    rpc_workers: tuple[str, ...],
) -> int:
    """Bench MODEL with llama-bench in every chosen image, one cell after another.

    Every cell runs the same llama-bench parameters; a cell whose backend or Vulkan driver
    did not actually run (ggml found no device, fell back to the CPU) is failed, never
    counted. `vkrama --dry-run bench …` prints each cell's podman command. With
    `--serve --url URL`, measures a server already running there (MODEL: which of its
    models) and starts nothing.
    """
    ctx = click.get_current_context()
    if serve is not None:
        refuse_ignored(ctx, LLAMA_BENCH_ONLY, "without --serve (llama-bench's)", SERVE_SAYS)
        if extra_args:
            raise VkramaError(
                "arguments after -- go to llama-bench, which --serve does not run",
                hint="--serve starts llama-server as `vkrama serve` does; drop them",
                status=ExitStatus.USAGE,
            )
    if not generate:
        refuse_ignored(ctx, ["out_dir"], "with --generate")
    if serve is not None and serve.url is not None:
        picks = (("--backend", backends), ("--vk-driver", vk_drivers), ("--all", every),
                 ("--tuned", tuned), ("--generate", generate), ("--rpc", rpc_workers))  # fmt: skip
        stray = [flag for flag, given in picks if given]
        if stray:
            raise VkramaError(f"{stray[0]} picks what vkrama starts; --url measures a server "
                              "already running", hint=f"drop {stray[0]}, or --url",
                              status=ExitStatus.USAGE)  # fmt: skip
        return bench_url(app, serve, model, as_json, no_save, timeout)
    if model is None:
        raise VkramaError("Missing argument 'MODEL'", hint="a GGUF file or reference; "
                          "`--serve --url URL` measures a running server without one",
                          status=ExitStatus.USAGE)  # fmt: skip
    if n_prompt == 0 and n_gen == 0:
        raise VkramaError(
            "-p and -n are both 0: nothing to measure",
            hint="e.g. -p 512 (prompt processing), -n 128 (generation), or both",
            status=ExitStatus.USAGE,
        )
    if rpc_workers and (serve is not None or tuned or generate):
        other = "--serve" if serve is not None else "--tuned" if tuned else "--generate"
        raise VkramaError(
            f"--rpc adds a llama-bench cell split over the workers; it cannot be combined with"
            f" {other}",
            hint="for a split server's serving figures: `vkrama serve MODEL --rpc ... -d`, then"
            " `vkrama bench --serve --url URL`",
            status=ExitStatus.USAGE,
        )
    if tuned and serve:  # a flag given beside --tuned (--fa, --threads) wins over the tuning
        raise VkramaError(
            "--tuned takes each stack's flags from `vkrama tune`; it cannot be combined with"
            " --serve",
            hint="`serve --backend best` serves the tuned winner with its flags",
            status=ExitStatus.USAGE,
        )
    params = BenchParams(n_prompt, n_gen, repetitions, ngl, fa, threads, extra_args, depth)
    request = BenchRequest(
        model=model,
        backends=backends,
        vk_drivers=vk_drivers,
        every=every,
        gpu=gpu,
        split_mode=split_mode,
        tensor_split=tensor_split,
        params=params,
        env=_env(env),
        unset_env=unset_env,
        save=not no_save,
        timeout=timeout,
        serve=serve,
        tuned=tuned,
        check=not no_check,
        rpc=rpc_workers,
    )
    if generate:
        return write_jobs(app, request, out_dir)
    if app.dry_run:
        planned = session.plan(app.settings, request)
        if as_json:
            echo_json(
                [
                    {
                        "backend": c.backend,
                        "driver": c.driver,
                        "prepare": dry_run_prelude(c.spec),
                        "gpus": list(c.gpus),
                        "command": c.spec.podman_argv(),
                    }
                    for c in planned.cells
                ]
            )
        for cell in [] if as_json else planned.cells:
            if cell.tuning:  # bench --tuned: which tuning this cell runs, for which test
                click.echo(f"# {cell.key}: {cell.tuning}")
            for line in dry_run_prelude(cell.spec):
                click.echo(line)
            click.echo(cell.spec.podman_command())
        for failed in planned.unavailable:
            click.echo(f"# {failed.backend}: {note(failed.status, failed.reason)}", err=True)
        if request.check and app.settings["bench.check"]:
            _say(f"# first, stacks not yet checked for this model and image get the output"
                 f" check (`vkrama --dry-run check {model}`; --no-check skips it)")  # fmt: skip
        return int(ExitStatus.OK)
    with terminate_as_interrupt(), reporting(app.verbose) as reporter:
        planned = session.prepare(app.settings, request, app.engine, on_progress=reporter)
        outcome = session.execute(app.engine, app.settings, planned, on_progress=reporter)
    return _shown(outcome, serve is not None, as_json)


def bench_url(
    app: App, serve: ServeParams, model: str | None, as_json: bool, no_save: bool,
    timeout: float | None,
) -> int:  # fmt: skip
    """`bench --serve --url`: the levels against a running server; nothing is started."""
    if app.dry_run:
        click.echo(f"# would measure the server at {serve.url} (nothing is started)")
        return int(ExitStatus.OK)
    wait = timeout if timeout is not None else float(app.settings["bench.timeout"])
    with terminate_as_interrupt(), reporting(app.verbose) as reporter:
        outcome = remote.execute(app.settings, serve, model, save=not no_save,
                                      timeout=wait, on_progress=reporter)  # fmt: skip
    return _shown(outcome, True, as_json)


def _shown(outcome: session.BenchOutcome, serving: bool, as_json: bool) -> int:
    """The run's table or JSON, and its exit status."""
    found = report.outcome_rows(outcome.run_id, outcome.results, outcome.tests, serving)
    if as_json:
        echo_json(found)
    else:
        click.echo(report.table(found))
        if outcome.run_id is not None:
            click.echo(f"stored as run {outcome.run_id} (`vkrama results show {outcome.run_id}`)")
    if outcome.interrupted:
        click.echo("Interrupted: finished cells were kept.", err=True)
        return int(ExitStatus.INTERRUPTED)
    return int(ExitStatus.OK if outcome.status == RunStatus.OK else ExitStatus.BENCH_FAILED)


def write_jobs(app: App, request: BenchRequest, out_dir: Path) -> int:
    """Plan the matrix as `bench` does (nothing runs here) and write it as Jobs."""
    planned = session.plan(app.settings, request)
    for failed in planned.unavailable:
        _say(f"# {failed.backend}: {note(failed.status, failed.reason)}")
    generated = fleet.jobs(
        planned, session.run_info(planned), secrets.token_hex(4), request.model, out_dir
    )
    echo_generated(generated, out_dir, app.dry_run, "run it and collect the results with:")
    return int(ExitStatus.OK)


def _say(message: str) -> None:
    click.echo(message, err=True)
