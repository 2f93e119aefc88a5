"""`vkrama run MODEL [PROMPT]`: the quickest way to see a model talk.

Stage: CLI shell over `vkrama.serve.lifecycle.reuse_or_start` (a server already serving the
model, or one started here and removed when done) and `vkrama.serve.chat` (stream answers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vkrama.cli.app import App, pass_app, refuses_dry_run, terminate_as_interrupt
from vkrama.cli.flags import serve_flags
from vkrama.cli.progress import reporting
from vkrama.cli.serve import log_tail_on_failure
from vkrama.serve import lifecycle
from vkrama.serve.chat import Conversation
from vkrama.serve.plan import ServeRequest

if TYPE_CHECKING:
    from vkrama.backends import GpuSelection

EXIT_WORDS = {"/bye", "/exit", "/quit"}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.argument("prompt", required=False)
@serve_flags
@click.option("--max-tokens", type=click.IntRange(min=1), metavar="N", help="Longest answer.")
@click.option(
    "--temperature", type=click.FloatRange(min=0), metavar="T", help="Sampling temperature."
)
@click.option(
    "--api-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="F",
    help="Key of a server started with --api-key-file (and of the one started here).",
)
@pass_app
@refuses_dry_run("run starts a server and talks to it; `vkrama serve MODEL --dry-run` shows it")
def run(
    app: App, model: str, prompt: str | None, backend: str | None, gpu: GpuSelection,
    split_mode: str | None, tensor_split: tuple[float, ...],
    vk_driver: str | None, ctx_size: int | None, ngl: int | None, timeout: float | None,
    max_tokens: int | None, temperature: float | None, api_key_file: Path | None,
) -> None:  # fmt: skip
    """Answer PROMPT with MODEL, or chat with it when no PROMPT is given.

    Uses a server already serving MODEL if there is one; otherwise starts one on a free
    port and removes it afterwards.
    """
    request = ServeRequest(
        model=model, backend=backend or app.settings["serve.backend"], gpu=gpu,
        split_mode=split_mode, tensor_split=tensor_split, vk_driver=vk_driver,
        ctx_size=ctx_size, ngl=ngl, api_key_file=api_key_file, timeout=timeout,
    )  # fmt: skip
    with (
        terminate_as_interrupt(),
        reporting(app.verbose) as reporter,
        log_tail_on_failure(),
        lifecycle.reuse_or_start(app.settings, app.engine, request, reporter) as server,
    ):
        reporter.close()
        conversation = Conversation(
            server.url, server.alias, server.api_key, max_tokens, temperature
        )
        if prompt is not None:
            answer(conversation, prompt)
        else:
            chat_loop(conversation)


def answer(conversation: Conversation, prompt: str) -> None:
    for piece in conversation.ask(prompt):
        click.echo(piece, nl=False)
    click.echo()


def chat_loop(conversation: Conversation) -> None:
    """Read prompts until end of input or /bye; Ctrl-C cancels the answer being written."""
    say(f"Chatting with {conversation.model}. /bye or Ctrl-D ends.")
    while True:
        try:
            prompt = input(">>> ")
        except EOFError:
            click.echo()
            return
        if prompt.strip() in EXIT_WORDS:
            return
        if not prompt.strip():
            continue
        try:
            answer(conversation, prompt)
        except KeyboardInterrupt:
            click.echo()
            say("(answer cancelled)")


def say(message: str) -> None:
    click.echo(message, err=True)
