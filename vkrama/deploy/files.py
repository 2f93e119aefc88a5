"""The files a deploy writes: `Generated` (name → text, and how to start them), YAML text,
and `write`, which puts each file down whole.

Stage: deploy. `write` is the only function of the stage that touches the file system, and
it writes each file whole (temporary file, then rename) so that a failure leaves nothing
half-written. Must not start containers, talk to podman or print.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vkrama.errors import ExitStatus, VkramaError


@dataclass(frozen=True)
class Generated:
    """Files to write (name → text) and the commands that start, inspect and stop them."""

    files: dict[str, str]
    start: list[str]
    # Writable bind-mount sources (compile caches) the engine will not create itself.
    host_dirs: tuple[Path, ...] = ()


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML ships no stubs
    def ignore_aliases(self, data: object) -> bool:
        return True  # repeated values written out, never as &anchors a reader must follow


def _block_text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    """Scripts as literal blocks, readable in the file, not one escaped line."""
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _block_text)


def yaml_text(docs: list[dict[str, Any]], header: list[str]) -> str:
    """YAML documents, key order kept, under a comment header saying what they are."""
    lines = [f"# {line}" for line in header]
    body = "---\n".join(yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000) for doc in docs)
    return "\n".join(lines) + "\n" + body


def write(generated: Generated, out_dir: Path) -> list[Path]:
    """Write every file whole into `out_dir` (created if missing); the paths written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VkramaError(
            f"cannot create {out_dir}: {exc.strerror}",
            hint="pick another directory with -o DIR",
            status=ExitStatus.USAGE,
        ) from None
    staged: list[tuple[str, Path]] = []
    try:
        for name, text in generated.files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o644)
            staged.append((tmp, out_dir / name))
    except OSError as exc:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise VkramaError(
            f"cannot write into {out_dir}: {exc.strerror}",
            hint="pick another directory with -o DIR",
            status=ExitStatus.USAGE,
        ) from None
    for tmp, final in staged:
        os.replace(tmp, final)
    for directory in generated.host_dirs:
        if not directory.is_dir():
            directory.mkdir(parents=True)
            # Like serve's compile cache: the container user maps to another uid rootless.
            directory.chmod(0o777)
    return [final for _, final in staged]
