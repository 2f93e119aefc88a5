"""Recipes: the Containerfiles vkrama ships, where they live and what they start from.

Stage: images (before the engine). Finds `containerfiles/` in a source checkout or an
installed wheel, hashes a recipe, and resolves its FROM lines to the base images a build
will need, so that a base that cannot be had is reported before podman tries to pull it.
Must not talk to podman or print; the one network call is `registry_reachable`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from vkrama.errors import ExitStatus, VkramaError

SUFFIX = ".Containerfile"
# Recipes that build another recipe's backend: rocm7 is the rocm image compiled from source
# with Debian experimental's ROCm 7 (see `images.rocm`), not a backend of its own.
VARIANTS = {"rocm7": "rocm"}
# Docker Hub's short registry name is not the host that serves its API.
REGISTRY_HOSTS = {"docker.io": "registry-1.docker.io"}

_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$", re.IGNORECASE)
_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Recipe:
    """One backend's Containerfile; the directory holding it is the build context."""

    backend: str
    path: Path

    @property
    def context(self) -> Path:
        return self.path.parent

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def inputs(self) -> list[Path]:
        """The recipe and every file next to it that a build may COPY: the shared scripts
        and the recipe's own files (`oneapi-wheels.txt` for oneapi.Containerfile)."""
        own = f"{self.path.name.removesuffix(SUFFIX)}-"
        return [
            self.path,
            *sorted(
                p
                for p in self.context.iterdir()
                if p.is_file() and (p.suffix == ".sh" or p.name.startswith(own))
            ),
        ]

    @property
    def sha256(self) -> str:
        """Hash of the recipe and every file next to it that a build may COPY."""
        digest = hashlib.sha256()
        for path in self.inputs:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    @property
    def base_description(self) -> str:
        """What the header comment says BASE is (`#   BASE  Intel's oneAPI base kit image (…)`)."""
        for line in self.text.splitlines():
            match = re.match(r"^#\s+BASE\s+([^(]+)", line)
            if match:
                return match.group(1).strip()
        return "base image"

    @property
    def multi_stage(self) -> bool:
        return sum(1 for line in _logical_lines(self.text) if _FROM.match(line)) > 1

    def copies(self, name: str) -> bool:
        """Whether a COPY step takes `name` from the build context: a file vkrama must stage
        there (a llama.cpp source tarball) since it does not ship with the recipes."""
        return any(
            line.split()[:1] == ["COPY"] and name in line.split()[1:-1]
            for line in _logical_lines(self.text)
        )

    def default_args(self) -> dict[str, str]:
        """The ARGs declared before the first FROM, with their defaults."""
        args: dict[str, str] = {}
        for line in _logical_lines(self.text):
            if _FROM.match(line):
                break
            match = _ARG.match(line)
            if match:
                args[match.group(1)] = match.group(2) or ""
        return args

    def declares(self, name: str) -> bool:
        """Whether any stage declares build arg `name` (podman warns about unused ones)."""
        return any(
            (m := _ARG.match(line)) and m.group(1) == name for line in _logical_lines(self.text)
        )

    def base_images(self, build_args: Mapping[str, str] | None = None) -> list[str]:
        """Images the FROM lines name once build args are applied (earlier stages left out)."""
        args = {**self.default_args(), **(build_args or {})}
        stages: set[str] = set()
        bases: list[str] = []
        for line in _logical_lines(self.text):
            match = _FROM.match(line)
            if not match:
                continue
            image = _VAR.sub(lambda m: args.get(m.group(1) or m.group(2), ""), match.group(1))
            if image.lower() not in stages and image != "scratch" and image not in bases:
                bases.append(image)
            if match.group(2):
                stages.add(match.group(2).lower())
        return bases


def containerfiles_dir() -> Path:
    """`vkrama/containerfiles` in an installed wheel, else `containerfiles/` of the checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "containerfiles", package.parent / "containerfiles"):
        if candidate.is_dir():
            return candidate
    raise VkramaError(
        f"vkrama's containerfiles/ is missing (looked in {package} and {package.parent})",
        hint="reinstall vkrama; the wheel carries them as vkrama/containerfiles",
        status=ExitStatus.ERROR,
    )


def available(directory: Path | None = None) -> tuple[str, ...]:
    """Backends that have a recipe, in the order vkrama lists them."""
    root = directory or containerfiles_dir()
    names = {path.name.removesuffix(SUFFIX) for path in root.glob(f"*{SUFFIX}")} - set(VARIANTS)
    order = ("cpu", "vulkan", "rocm", "cuda", "oneapi")
    return tuple(sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n)))


def recipe(backend: str, directory: Path | None = None) -> Recipe:
    root = directory or containerfiles_dir()
    path = root / f"{backend}{SUFFIX}"
    if not path.is_file():
        raise VkramaError(
            f"no image recipe for backend {backend!r}",
            hint=f"backends with an image: {', '.join(available(root))}",
            status=ExitStatus.USAGE,
        )
    return Recipe(VARIANTS.get(backend, backend), path)


def registry_of(image: str) -> str:
    """The registry an image reference points at (`docker.io` for short names)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def registry_reachable(registry: str, timeout: float = 5.0) -> bool:
    """Whether the registry answers at all (any HTTP status counts: /v2/ usually says 401)."""
    host = REGISTRY_HOSTS.get(registry, registry)
    try:
        requests.get(f"https://{host}/v2/", timeout=timeout, allow_redirects=False)
    except requests.RequestException:
        return False
    return True


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    if pending:
        lines.append(pending)
    return lines
