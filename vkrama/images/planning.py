"""Image build plans: which recipe, build args, labels and tags a backend's image gets.

Stage: images (`images.plan(backend, settings)` ─► `BuildPlan`, what `images build
--dry-run` prints and `images.build` sends). Pure: reads the recipes and the settings it is
given, plus (for rocm without `--gfx`) the host's AMD GPUs; never talks to podman, never
fetches, never prints.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vkrama import __version__
from vkrama.config import DEFAULTS, Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images import oneapi, rocm
from vkrama.images.recipes import Recipe, recipe

REPOSITORY = "localhost/vkrama"


@dataclass(frozen=True)
class StagedContext:
    """A build context vkrama assembles under its cache: the recipe, its files and what
    it needs from outside Debian (a build container may reach nothing but the Debian
    mirror, so these come in through the context): the llama.cpp source tarball the rocm7
    recipe compiles, or the wheels the oneapi recipe pins."""

    directory: Path
    home: Path
    source: rocm.LlamaSource | None = None
    wheels: tuple[oneapi.Wheel, ...] = ()


@dataclass(frozen=True)
class BuildPlan:
    """What `build` sends to podman: enough to print the equivalent `podman build`."""

    recipe: Recipe
    build_args: dict[str, str]
    tags: tuple[str, ...]
    no_cache: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    staged: StagedContext | None = None

    @property
    def context(self) -> Path:
        return self.staged.directory if self.staged else self.recipe.context

    def staging_commands(self) -> list[str]:
        """The shell lines that assemble a staged context, which vkrama does itself before
        it builds: printed before `podman_argv` by --dry-run, so that the command runs."""
        if self.staged is None:
            return []
        directory, source = self.staged.directory, self.staged.source
        lines = [
            shlex.join(["mkdir", "-p", str(directory)]),
            shlex.join(["cp", *(str(p) for p in self.recipe.inputs), str(directory)]),
        ]
        # (where vkrama keeps it, or None when it must be downloaded; address; sha256; name)
        needed: list[tuple[Path | None, str, str, str]] = []
        if source is not None:
            cached = Path(source.url) if source.local else rocm.cache_path(self.staged.home, source)
            found = cached if source.local or cached.is_file() else None
            needed.append((found, source.url, source.sha256, rocm.SOURCE_NAME))
        for wheel in self.staged.wheels:
            cached = oneapi.cache_path(self.staged.home, wheel)
            found = cached if cached.is_file() else None
            needed.append((found, wheel.url, wheel.sha256, wheel.filename))
        for found, url, sha256, name in needed:
            target = str(directory / name)
            if found is not None:
                lines.append(shlex.join(["cp", str(found), target]))
            else:
                lines.append(shlex.join(["curl", "-fsSL", "-o", target, url]))
            if sha256:
                lines.append(f"echo {shlex.quote(f'{sha256}  {target}')} | sha256sum -c -")
        return lines

    def podman_argv(self) -> list[str]:
        where = self.context / self.recipe.path.name
        # vkrama builds through the Docker-compatible endpoint, which commits docker-format
        # images, and buildah only takes cache candidates of the format it is building: the
        # printed command says so, or it would miss every layer vkrama's own build made.
        argv = ["podman", "build", "--format", "docker", "-f", str(where)]
        for key, value in self.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        # buildah puts --label on every stage's image, so a recipe with a build stage
        # (the rpc stage, rocm7's builder) would miss the cached `COPY --from` layers of
        # vkrama's own build, which adds its labels in a step of its own after the build.
        if not self.recipe.multi_stage:
            for key, value in self.labels.items():
                argv += ["--label", f"{key}={value}"]
        for tag in self.tags:
            argv += ["-t", tag]
        if self.no_cache:
            argv.append("--no-cache")
        return [*argv, str(self.context)]


def image_ref(backend: str) -> str:
    """The name `ensure`/`build` give a backend's current image."""
    return f"{REPOSITORY}/{backend}:latest"


def plan(
    backend: str,
    settings: Settings,
    *,
    build_args: Mapping[str, str] | None = None,
    base: str | None = None,
    no_cache: bool = False,
    gfx: tuple[str, ...] = (),
    gfx_asked: bool = False,
    source: rocm.LlamaSource | None = None,
) -> BuildPlan:
    """Build args and tags for a backend (pure; `--dry-run` prints it).

    rocm: `gfx` are the targets it must serve (the host's AMD GPUs, or `--gfx`, then
    `gfx_asked`); they pick Debian's recipe or the ROCm 7 source build (`rocm.recipe_for`).
    `source` (`--llama-source`) is the llama.cpp the source build compiles instead of
    PyPI's, and asks for that build."""
    if source is not None and not gfx:
        raise VkramaError(
            "--llama-source: no AMD GPU found here to compile it for",
            hint="name the targets: --gfx gfx1151,gfx1201 (or --gfx all)",
            status=ExitStatus.USAGE,
        )
    asked = gfx_asked or source is not None
    variant = rocm.recipe_for(gfx, asked) if backend == "rocm" else backend
    chosen = recipe(variant)
    if settings.offline:
        raise VkramaError(
            f"cannot build {backend} offline: the build downloads Debian packages",
            hint="build without --offline, or `vkrama images load FILE` an image saved elsewhere",
            status=ExitStatus.OFFLINE,
        )
    args: dict[str, str] = {}
    # The Debian recipes follow settings images.base; a recipe with a base of its own
    # keeps it unless --base names one.
    if chosen.default_args().get("BASE") == DEFAULTS["images.base"]:
        args["BASE"] = settings["images.base"]
    if settings["images.apt_options"] and chosen.declares("APT_OPTIONS"):
        args["APT_OPTIONS"] = settings["images.apt_options"]
    if base:
        args["BASE"] = base
    staged = None
    if variant == rocm.SOURCE_RECIPE:
        source = source or rocm.PYPI_SOURCE
        # Only these args (and the source's bytes) reach the compile step: the same
        # targets and source hit the layer cache.
        args["GFX_TARGETS"] = ";".join(gfx)
        args["LLAMA_CPP_BUILD"] = source.build
        args["LLAMA_CPP_SOURCE_NAME"] = source.recorded_as
        staged = StagedContext(settings.home / "cache" / "build" / variant, settings.home, source)
    elif variant == "oneapi":
        wheels = oneapi.pinned(chosen.context / oneapi.PINS_NAME)
        # Its rpc stage is the Debian recipes' (rpc.sh), from the same source as theirs.
        args["LLAMA_CPP_BUILD"] = rocm.PYPI_SOURCE.build
        staged = StagedContext(
            settings.home / "cache" / "build" / variant, settings.home, rocm.PYPI_SOURCE, wheels
        )
    elif chosen.copies(rocm.SOURCE_NAME):
        # The Debian recipes compile ggml's RPC module and rpc-server from it (rpc.sh).
        args["LLAMA_CPP_BUILD"] = rocm.PYPI_SOURCE.build
        staged = StagedContext(
            settings.home / "cache" / "build" / variant, settings.home, rocm.PYPI_SOURCE
        )
    args.update(build_args or {})
    labels = {
        "vkrama.image.vkrama_version": __version__,
        "vkrama.image.containerfile_sha256": chosen.sha256,
    }
    tags = (f"{REPOSITORY}/{backend}:{__version__}", image_ref(backend))
    return BuildPlan(chosen, args, tags, no_cache, labels, staged)


def rocm_targets(
    settings: Settings, gfx: str | None, backends: Sequence[str]
) -> tuple[tuple[str, ...], bool]:
    """The gfx targets a rocm build serves and whether they were asked for: `--gfx`, else
    the AMD GPUs this host has (none: Debian's image, which needs no compiling)."""
    if gfx is not None:
        if "rocm" not in backends:
            raise VkramaError(
                "--gfx applies to the rocm image only",
                hint="vkrama images build rocm --gfx gfx1201",
                status=ExitStatus.USAGE,
            )
        return rocm.parse_gfx(gfx), True
    if "rocm" not in backends:
        return (), False
    from vkrama.hardware import detect_host

    return rocm.host_targets(detect_host(settings)), False


def llama_source(
    spec: str | None, backends: Sequence[str], build: str | None = None
) -> rocm.LlamaSource | None:
    """`--llama-source URL|FILE` for the backends being built (rocm's only)."""
    if spec is None:
        return None
    if "rocm" not in backends:
        raise VkramaError(
            "--llama-source applies to the rocm image only",
            hint="vkrama images build rocm --gfx gfx1201 --llama-source URL",
            status=ExitStatus.USAGE,
        )
    return rocm.user_source(spec, build)
