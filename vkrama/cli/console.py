"""How results reach the terminal: JSON for scripts, tables for people, dry-run lines.

Stage: the last one (report ─► stdout). Domain code hands plain data here; nothing below
`cli/` prints. Progress events are drawn by `cli.progress`.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import Enum
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from vkrama.deploy import Generated
    from vkrama.engine.spec import ContainerSpec


def to_json(value: Any) -> Any:
    """`value` as plain JSON data: the one way every `--json` document is shaped.

    A dataclass becomes its fields in order, then what its `json_fields()` returns (the
    derived properties a script needs, e.g. `Gpu.vendor`; a key there replaces the field of
    that name in place); an enum its value; a path its text; a date its ISO 8601 form;
    tuples and sets lists. Anything else JSON cannot hold is a bug: json.dumps says so.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        shaped = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        extra = getattr(value, "json_fields", None)
        if extra is not None:
            shaped.update(extra())
        return {key: to_json(item) for key, item in shaped.items()}
    if isinstance(value, Enum):
        return to_json(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(item) for item in value]
    return value


def echo_json(data: Any) -> None:
    """Print data (see `to_json`) as indented JSON on stdout."""
    click.echo(json.dumps(to_json(data), indent=2))


def echo_table(
    rows: Sequence[Sequence[Any]], headers: Sequence[str] = (), tablefmt: str = "simple"
) -> None:
    from tabulate import tabulate  # imported here: only commands that print tables pay for it

    click.echo(tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True))


def interactive() -> bool:
    """True when progress displays make sense (stderr is a terminal)."""
    return sys.stderr.isatty()


def dry_run_prelude(spec: ContainerSpec) -> list[str]:
    """Shell lines that must run before a printed `podman run` can: podman refuses a bind
    mount whose source is missing, and vkrama creates its writable caches (compile caches
    under VKRAMA_HOME) only when it really runs, so a dry run says how instead."""
    return [
        f"mkdir -p -m 0777 {shlex.quote(str(mount.source))}"
        for mount in spec.mounts
        if not mount.read_only and not mount.source.exists()
    ]


def echo_generated(generated: Generated, out_dir: Path, dry_run: bool, how: str) -> None:
    """Write generated deployment files and say how to start them (`how` heads the
    commands); under --dry-run print each file instead and write nothing."""
    from vkrama import deploy  # here: only --generate pays for YAML

    if dry_run:
        for name, text in generated.files.items():
            click.echo(f"# --- {out_dir / name} (not written: --dry-run)")
            click.echo(text.rstrip("\n"))
        return
    for path in deploy.write(generated, out_dir):
        click.echo(f"wrote {path}")
    click.echo(how)
    for line in generated.start:
        click.echo(f"  {line}")
