"""The command reference, docs/cli.md, made from every command's own `--help`.

Stage: CLI (click lives only here). Walks the click tree and renders each command's help as
`vkrama COMMAND --help` prints it; must not run a command, read settings or depend on the
host: the width is fixed, and a default that depends on the host or the environment must be
a callable (click shows `(dynamic)`) or said in words in the help text ("default: physical
cores"), never a computed value. tests/test_cli_reference.py fails when docs/cli.md is not
what this module renders, and names the command below that regenerates it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from vkrama.cli.root import cli

# The width `--help` prints at on any terminal 80 columns or wider (click: min(columns, 80) - 2),
# whatever the terminal that generates the page is.
WIDTH = 78
REGENERATE = ".venv/bin/python -m vkrama.cli.reference docs/cli.md"


def _context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    # As command.make_context builds it (the command's own context settings, e.g. -h), but
    # without parsing arguments: a command's required MODEL must not be needed to show help.
    settings: dict[str, Any] = {**command.context_settings}
    settings.update(terminal_width=WIDTH, max_content_width=WIDTH)
    return click.Context(command, info_name=name, parent=parent, **settings)


def _walk(command: click.Command, ctx: click.Context) -> Iterator[click.Context]:
    yield ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):  # sorted: the page does not depend on order
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, _context(sub, name, ctx))


def _anchor(path: str) -> str:
    return path.replace(" ", "-")


# The rules every command's values follow (vkrama/cli/types.py, vkrama/units.py).
GRAMMAR = [
    "## One grammar",
    "",
    "- **Durations** (`--budget`, `--timeout`, `--duration`, SLO limits): `90s`, `10m`,",
    "  `1h30m`, `500ms`, `1.5s`. A bare number is seconds; an SLO limit needs its unit.",
    "- **Lists** (`--backend`, `--vk-driver`, `--gpu`, `--depth`, `--fa`, `--concurrency`,",
    "  `--request-rate`, `--slo`, `--tensor-split`, `tune --flags`): comma-separated; an",
    '  empty list or an empty item (`1,,2`) is a usage error, never "not given".',
    "- **A flag a command would ignore is refused** with the flag that gives it meaning:",
    "  `bench --request-rate 2` without `--serve`, `bench --serve -p 64` (llama-bench's),",
    "  `-o` without `--generate`, `serve --rank-by` without `--backend best`, `tune --show`",
    "  with search flags, `tune -n` with `--for pp`.",
    "- **`-d`** follows the tool each command wraps: `--depth` in `bench` and `tune`",
    "  (llama-bench's `-d`), `--detach` in `serve` (podman's and docker's `-d`). Kept so on",
    "  purpose: each is what users of that tool type.",
    "- **Defaults that differ, and why**: `-r` is 5 in `bench`, 3 (at least 2) in `tune`,",
    "  which judges noise from the spread and reruns survivors; `-p` is 512 in `bench`",
    "  (llama-bench's), 2048 in `tune` (an ubatch above the prompt changes nothing), so",
    "  `bench --tuned -p 2048` measures where a default tuning did. `--timeout` takes any",
    "  time above 0 everywhere (serve took 0, bench and tune at least 1 s).",
    "- `--json` is on every command a script reads: `serve -d --json` gives the server's",
    "  name, id, url and alias; `--dry-run --json` the commands.",
]


def render() -> str:
    """The whole of docs/cli.md."""
    contexts = list(_walk(cli, _context(cli, "vkrama", None)))
    lines = [
        "# Command reference",
        "",
        "Every command's `--help`, generated; do not edit by hand. After changing a command,",
        f"regenerate it: `{REGENERATE}`.",
        "",
        *GRAMMAR,
        "",
    ]
    lines += [f"- [`{c.command_path}`](#{_anchor(c.command_path)})" for c in contexts]
    for ctx in contexts:
        lines += ["", f"## {ctx.command_path}", "", "```text", ctx.get_help(), "```"]
    lines += ["", "[← README](../README.md)"]
    return "\n".join(lines) + "\n"


def write(path: Path) -> None:
    """Write the reference in one step: a failed run leaves the old file, never half of one."""
    text = render()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@click.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
def main(path: Path | None) -> None:
    """Write the command reference to PATH (docs/cli.md), or print it."""
    if path is None:
        click.echo(render(), nl=False)
    else:
        write(path)


if __name__ == "__main__":
    main()
