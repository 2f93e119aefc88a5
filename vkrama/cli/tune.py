"""`vkrama tune`: each stack's fastest llama-bench settings for a model, within a budget.

Stage: CLI shell over `vkrama.tune.session`. Parses flags into a `TuneRequest`; prints the
first trial's podman command per stack on --dry-run, progress on stderr, then one line per
stack (or JSON); `--show` lists what is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vkrama import llama_flags
from vkrama.backends.env_switches import is_switch
from vkrama.cli.app import App, dry_run_option, pass_app, terminate_as_interrupt
from vkrama.cli.bench import BACKENDS, DEPTHS, VK_DRIVERS
from vkrama.cli.console import dry_run_prelude, echo_json, echo_table
from vkrama.cli.flags import gpu_type
from vkrama.cli.progress import reporting
from vkrama.cli.types import CommaList, Duration, refuse_ignored
from vkrama.errors import ExitStatus, VkramaError
from vkrama.llama_flags import FLAG
from vkrama.results import tunings
from vkrama.tune import session
from vkrama.tune.trials import OBJECTIVES

if TYPE_CHECKING:
    from vkrama.backends import GpuSelection

SHOW_HEADERS = ["stack", "device", "test", "tuned flags", "t/s", "defaults t/s", "gain",
                "noise", "image", "tuned"]  # fmt: skip


# What `--show` lists needs none of the search's flags: each given with it is refused.
SEARCH_ONLY = ("backends", "vk_drivers", "gpu", "depth", "objective", "n_prompt", "n_gen",
               "budget", "repetitions", "only", "timeout", "no_save")  # fmt: skip
# --flags names llama.cpp's flags with or without their dash (ub,fa or -ub,-fa), or as
# llama-server spells them (--ubatch-size); a name not in the table is refused later, by
# tune.space, in its own words.
FLAG_NAMES = CommaList(lambda name: llama_flags.name(name) or name.lstrip("-"),
                       what="a list of llama-bench flags", example="ub,fa,ctk")  # fmt: skip


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False)
@click.option("--backend", "backends", type=BACKENDS, default=(), metavar="B1,B2",
              help="Backends: cpu,vulkan,rocm,cuda,oneapi.")  # fmt: skip
@click.option("--vk-driver", "vk_drivers", type=VK_DRIVERS, default=(), metavar="D1,D2",
              help="Vulkan drivers to tune.")  # fmt: skip
@click.option("--gpu", metavar="N", callback=gpu_type(), help="The GPU (index) to tune on.")
@click.option("-d", "--depth", type=DEPTHS, default=(), metavar="D1,D2",
              help="Context depths to measure at (-d).")  # fmt: skip
@click.option(
    "--for", "objective", type=click.Choice(OBJECTIVES), default="pp", show_default=True,
    help="What to make fast: prompt processing, generation, both (geometric mean), or "
    "joules: most tokens per joule above the idle draw, pp and tg (geometric mean), from the "
    "device's own counter (refused where it has none: `vkrama doctor`).",
)  # fmt: skip
@click.option(
    "-p", "--n-prompt", type=click.IntRange(min=1), default=2048, show_default=True,
    metavar="N", help="Prompt tokens measured (--for pp, both or joules; an ubatch above this "
    "changes nothing, hence more than bench's 512; `bench --tuned -p 2048` measures where it "
    "tuned).",
)  # fmt: skip
@click.option(
    "-n", "--n-gen", type=click.IntRange(min=1), default=128, show_default=True, metavar="N",
    help="Generated tokens measured (--for tg, both or joules).",
)  # fmt: skip
@click.option(
    "--budget", type=Duration(0, open=True), default="10m", show_default=True, metavar="TIME",
    help="Time for the whole tuning, shared over the stacks (e.g. 90s, 10m, 1h; a bare "
    "number is seconds).",
)  # fmt: skip
@click.option(
    "-r", "--repetitions", type=click.IntRange(min=2), default=3, show_default=True,
    metavar="N", help="Repetitions of a value's first trial (survivors get more); at least 2, "
    "as noise is judged from their spread (bench's default is 5).",
)  # fmt: skip
@click.option("--flags", "only", type=FLAG_NAMES, default=(), metavar="F1,F2",
              help="Search only these (e.g. ub,fa,ctk or -ub,-fa, or a stack's own switch "
                   "such as GGML_VK_DISABLE_F16).")  # fmt: skip
@click.option("--timeout", type=Duration(0, open=True), metavar="TIME",
              help="Time per trial, e.g. 5m (a bare number is seconds).")  # fmt: skip
@click.option("--show", is_flag=True, help="List stored tunings (of MODEL, if given).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-save", is_flag=True, help="Store neither the trials nor the outcome.")
@dry_run_option
@pass_app
def tune(
    app: App, model: str | None, backends: tuple[str, ...], vk_drivers: tuple[str, ...],
    gpu: GpuSelection, depth: tuple[int, ...], objective: str, n_prompt: int, n_gen: int,
    budget: float, repetitions: int, only: tuple[str, ...], timeout: float | None, show: bool,
    as_json: bool, no_save: bool,
) -> int:  # fmt: skip
    """Search each stack's fastest (or, --for joules, most frugal) llama-bench flags for
    MODEL (ubatch, batch, flash attention, KV cache types, threads on cpu, ...) and store
    them per GPU, image and model; `bench --tuned` and `serve --backend best` use them."""
    ctx = click.get_current_context()
    if show:
        refuse_ignored(ctx, SEARCH_ONLY, "without --show (they steer a tuning)")
        return show_tuned(app, model, as_json)
    if objective == "pp":
        refuse_ignored(ctx, ["n_gen"], "with --for tg, both or joules")
    if objective == "tg":
        refuse_ignored(ctx, ["n_prompt"], "with --for pp, both or joules")
    if model is None:
        raise VkramaError("tune needs a MODEL", hint="or --show", status=ExitStatus.USAGE)
    request = session.TuneRequest(
        model, backends, vk_drivers, gpu, depth, objective, n_prompt,
        n_gen, budget, repetitions, only, not no_save, timeout,
    )  # fmt: skip
    if app.dry_run:
        return dry_run(app, request, as_json)
    with terminate_as_interrupt(), reporting(app.verbose) as reporter:
        planned = session.prepare(app.settings, request, app.engine, on_progress=reporter)
        outcome = session.execute(app.engine, app.settings, planned, on_progress=reporter)
    if as_json:  # a stack whose search could not start is listed too, as on stderr
        failed = [{"stack": name, "failed": error.message, "hint": error.hint,
                   "exit_code": int(error.status)} for name, error in outcome.failed]  # fmt: skip
        echo_json([*outcome.tuned, *failed])
    for line in [] if as_json else [t.line for t in outcome.tuned]:
        click.echo(line)
    if outcome.run_id is not None and not as_json:
        click.echo(
            f"trials stored as run {outcome.run_id} (`vkrama results show {outcome.run_id}`)"
        )
    if outcome.interrupted:
        click.echo("Interrupted: stacks tuned to the end were kept, the rest not.", err=True)
        return int(ExitStatus.INTERRUPTED)
    for name, error in outcome.failed:  # the other stacks were tuned and stored
        click.echo(f"Error: {name}: {error.message}", err=True)
        if error.hint:
            click.echo(f"Hint: {error.hint}", err=True)
    return int(outcome.failed[0][1].status if outcome.failed else ExitStatus.OK)


def dry_run(app: App, request: session.TuneRequest, as_json: bool) -> int:
    planned = session.plan(app.settings, request)
    if as_json:
        echo_json([
            {"backend": s.ready.choice.backend, "driver": s.ready.choice.driver,
             "defaults": s.space.defaults, "searched": s.space.candidates,
             "prepare": dry_run_prelude(s.first.spec), "command": s.first.spec.podman_argv()}
            for s in planned.stacks
        ])  # fmt: skip
        return int(ExitStatus.OK)
    for one in planned.stacks:
        searched = "; ".join(
            f"{f}={','.join(x or 'unset' for x in v)} (if the image reads it)"
            if is_switch(f)
            else f"{FLAG[f].bench} {','.join(v)}"
            for f, v in one.space.candidates.items()
        )
        click.echo(f"# {one.first.key}: the defaults first, then one flag at a time: {searched}")
        for line in dry_run_prelude(one.first.spec):
            click.echo(line)
        click.echo(one.first.spec.podman_command())
    for failed in planned.unavailable:
        click.echo(f"# {failed.backend}: unavailable: {failed.reason}", err=True)
    return int(ExitStatus.OK)


def show_tuned(app: App, model: str | None, as_json: bool) -> int:
    sha = None
    if model is not None:
        from vkrama import store

        sha = store.resolve(app.settings, model).sha256
    found = tunings.newest(app.settings, sha)
    if as_json:
        echo_json(found)
        return int(ExitStatus.OK)
    if not found:
        click.echo("no tunings stored yet: `vkrama tune MODEL` makes one", err=True)
        return int(ExitStatus.OK)
    echo_table(
        [
            [t.key, t.device, t.test, _flags_said(t),
             _figures(t, t.tps, t.tps_stddev), _figures(t, t.default_tps, t.default_stddev),
             f"{t.gain:.2f}×", "beyond" if t.beyond_noise else "within", t.image_id[:12],
             f"{t.created[:16]} ({t.spent_s:.0f} s)"]
            for t in found
        ],
        SHOW_HEADERS,
    )  # fmt: skip
    return int(ExitStatus.OK)


def _figures(tuning: tunings.TunedStack, mean: float, stddev: float) -> str:
    said = f"{tuning.figure(mean)} ± {tuning.figure(stddev)}"
    return said if tuning.unit == "t/s" else f"{said} {tuning.unit}"


def _flags_said(tuning: tunings.TunedStack) -> str:
    if tuning.changed or not tuning.tried:
        return tuning.settings or "defaults"
    return f"defaults ({tuning.tried_settings} tried)"
