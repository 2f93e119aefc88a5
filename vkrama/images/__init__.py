"""Images: one llama.cpp image per backend, built from vkrama's recipes and described.

Stage: images (`images.ensure(engine, backend)` ─► image, reused or built). Decides tags,
build args and provenance labels and reports progress to a `Reporter`; podman is
reached only through `vkrama.engine.images`. Must not print or import click.
Over 300 lines because plan, build, ensure, list, save and load share the recipes, tags and
provenance labels; `recipes` and `provenance` are already apart.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from vkrama import __version__
from vkrama.config import DEFAULTS, Settings
from vkrama.engine import images as engine_images
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images import rocm
from vkrama.images.provenance import (
    PROVENANCE_PATH,
    parse_provenance_json,
    provenance_from_labels,
    provenance_labels,
    stack_version,
)
from vkrama.images.recipes import Recipe, available, recipe, registry_of, registry_reachable
from vkrama.progress import NULL, BuildProgress, Reporter

if TYPE_CHECKING:
    from vkrama.engine import Engine

REPOSITORY = "localhost/vkrama"
_STEP = re.compile(r"^STEP (\d+)/(\d+): ")


@dataclass(frozen=True)
class ImageRef:
    """A local image vkrama can run: its name, id and what it was built from."""

    backend: str
    ref: str
    id: str
    provenance: dict[str, str]


@dataclass(frozen=True)
class ImageStatus:
    """A backend's image as `images list` shows it; `image` is None while not built."""

    backend: str
    ref: str
    image: ImageRef | None = None
    size: int | None = None
    created: datetime | None = None
    tags: tuple[str, ...] = ()

    @property
    def stack(self) -> str:
        return stack_version(self.image.provenance) if self.image else "-"


@dataclass(frozen=True)
class StagedContext:
    """A build context vkrama assembles under its cache: the recipe, its scripts and a
    llama.cpp source tarball (the rocm7 recipe compiles one; a container has no network
    but the Debian mirror, so the source comes in through the context)."""

    directory: Path
    home: Path
    source: rocm.LlamaSource


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

    def podman_argv(self) -> list[str]:
        where = self.context / self.recipe.path.name
        # vkrama builds through the Docker-compatible endpoint, which commits docker-format
        # images, and buildah only takes cache candidates of the format it is building: the
        # printed command says so, or it would miss every layer vkrama's own build made.
        argv = ["podman", "build", "--format", "docker", "-f", str(where)]
        for key, value in self.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
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
    # (oneapi: Intel's image) keeps it unless --base names one.
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


def build(engine: Engine, build_plan: BuildPlan, on_progress: Reporter = NULL) -> ImageRef:
    """Build the planned image, record its provenance as labels, tag it; the image."""
    backend = build_plan.recipe.backend
    _check_bases(engine, build_plan)
    step = [0, 0]

    def on_line(line: str) -> None:
        match = _STEP.match(line)
        if match:
            step[:] = [int(match.group(1)), int(match.group(2))]
        on_progress(BuildProgress(backend, step[0], step[1], line))

    if build_plan.staged is not None:
        stage(build_plan, on_line)
    try:
        built = engine_images.build(
            engine,
            build_plan.context,
            build_plan.recipe.path.name,
            build_args=build_plan.build_args,
            no_cache=build_plan.no_cache,
            on_line=on_line,
        )
    except VkramaError as error:
        where = f" at step {step[0]}/{step[1]}" if step[1] else ""
        raise VkramaError(
            f"building {backend} failed{where}: {error.message.removeprefix('build failed: ')}",
            hint=error.hint,
            status=error.status,
        ) from error
    # What the image says about itself becomes labels, so that listing and benchmark rows
    # read it from `inspect` without starting anything. A separate FROM-only build, since
    # build args or labels on the first one would invalidate its cached layers.
    recorded = parse_provenance_json(
        engine_images.read_file(engine, built, PROVENANCE_PATH).decode("utf-8", "replace")
    )
    labels = {**provenance_labels(recorded), **build_plan.labels}
    summary = ", ".join(f"{k}={v}" for k, v in recorded.items() if k != "llama_cpp_version")
    on_progress(BuildProgress(backend, step[0], step[1], f"provenance: {summary}"))
    final = engine_images.build(
        engine, _label_context(built, labels), "Containerfile", tags=build_plan.tags
    )
    image = _image(engine, backend, image_ref(backend))
    assert image is not None and image.id == final, "podman tagged another image"
    return image


def ensure(
    engine: Engine,
    backend: str,
    settings: Settings,
    on_progress: Reporter = NULL,
    gfx: tuple[str, ...] = (),
) -> ImageRef:
    """The backend's local image, built on first use unless settings forbid it.

    rocm: `gfx` are the targets of the GPUs it will run on; a built image lacking one
    is BACKEND_UNAVAILABLE with the build command that fixes it."""
    image = _image(engine, backend, image_ref(backend))
    if image is not None:
        if backend == "rocm":
            rocm.check_targets(image.provenance, gfx)
        return image
    recipe(backend)  # an unknown backend is a usage error before anything else
    if settings["images.pull"] == "never" or settings.offline:
        why = "--offline" if settings.offline else f"images.pull={settings['images.pull']}"
        raise VkramaError(
            f"image {image_ref(backend)} is not built and {why} forbids building it",
            hint=f"`vkrama images build {backend}` builds it; `vkrama images load FILE` loads one",
            status=ExitStatus.IMAGE_UNAVAILABLE,
        )
    targets: tuple[str, ...] = ()
    if backend == "rocm":
        from vkrama.hardware import detect_host

        # Every AMD GPU here, not only this cell's: one rocm image serves them all.
        targets = rocm.targets_union(rocm.host_targets(detect_host(settings)), gfx)
    return build(engine, plan(backend, settings, gfx=targets), on_progress)


def list_images(engine: Engine) -> list[ImageStatus]:
    """Every backend with a recipe, built or not."""
    return [status(engine, backend) for backend in available()]


def status(engine: Engine, backend: str) -> ImageStatus:
    recipe(backend)
    ref = image_ref(backend)
    info = engine_images.inspect(engine, ref)
    if info is None:
        return ImageStatus(backend, ref)
    image = ImageRef(backend, ref, info.id, provenance_from_labels(info.labels))
    return ImageStatus(backend, ref, image, info.size, info.created, info.tags)


def inspect(engine: Engine, backend: str) -> ImageStatus:
    """A built backend's image; NOT_FOUND when it is not built."""
    found = status(engine, backend)
    if found.image is None:
        raise VkramaError(
            f"the {backend} image is not built",
            hint=f"`vkrama images build {backend}` builds it",
            status=ExitStatus.NOT_FOUND,
        )
    return found


def tags(engine: Engine, backend: str) -> list[str]:
    """Every vkrama tag of a backend's images: what `remove` removes (and --dry-run shows)."""
    recipe(backend)
    return [
        tag
        for info in engine_images.list_images(engine, f"{REPOSITORY}/{backend}")
        for tag in info.tags
        if tag.startswith(f"{REPOSITORY}/{backend}:")
    ]


def remove(engine: Engine, backends: Sequence[str]) -> list[str]:
    """Remove every vkrama tag of these backends' images; the names removed."""
    return [tag for b in backends for tag in tags(engine, b) if engine_images.remove(engine, tag)]


def save(
    engine: Engine,
    backends: Sequence[str],
    destination: Path,
    on_progress: Reporter = NULL,
) -> list[str]:
    """Write the backends' images into one archive for `load` on another host."""
    refs = [inspect(engine, backend).ref for backend in backends]
    engine_images.save(engine, refs, destination, on_progress)
    return refs


def load(engine: Engine, source: Path) -> list[str]:
    """Load an archive written by `save`; the image names it held."""
    if not source.is_file():
        raise VkramaError(f"{source}: no such file", status=ExitStatus.NOT_FOUND)
    return engine_images.load(engine, source)


def _image(engine: Engine, backend: str, ref: str) -> ImageRef | None:
    info = engine_images.inspect(engine, ref)
    if info is None:
        return None
    return ImageRef(backend, ref, info.id, provenance_from_labels(info.labels))


def _check_bases(engine: Engine, build_plan: BuildPlan) -> None:
    """Fail before the build when a base image is neither here nor reachable."""
    backend = build_plan.recipe.backend
    for base in build_plan.recipe.base_images(build_plan.build_args):
        if engine_images.inspect(engine, base) is not None:
            continue
        registry = registry_of(base)
        hint = (
            f"pull it where {registry} is reachable, then `podman save {base} | podman load` "
            "it here, or name a local base with --base"
        )
        if registry == "localhost":
            raise VkramaError(
                f"cannot build {backend}: base image {base} is not in local storage",
                hint=hint,
                status=ExitStatus.IMAGE_UNAVAILABLE,
            )
        if not registry_reachable(registry):
            raise VkramaError(
                f"cannot build {backend}: {build_plan.recipe.base_description} {base} is not "
                f"in local storage and {registry} is not reachable from here",
                hint=hint,
                status=ExitStatus.IMAGE_UNAVAILABLE,
            )


def stage(build_plan: BuildPlan, on_line: Callable[[str], None]) -> None:
    """Assemble the staged context: the recipe and its scripts, and the source tarball
    (fetched once into the cache, sha256 checked) under the name the recipe COPYs."""
    staged = build_plan.staged
    assert staged is not None
    source = rocm.fetch_source(staged.home, staged.source, on_line)
    staged.directory.mkdir(parents=True, exist_ok=True)
    for path in [build_plan.recipe.path, *build_plan.recipe.context.glob("*.sh")]:
        shutil.copyfile(path, staged.directory / path.name)
    target = staged.directory / rocm.SOURCE_NAME
    if not target.is_file() or target.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, target)


def _label_context(image_id: str, labels: Mapping[str, str]) -> bytes:
    """A build context whose Containerfile only adds labels to an image.

    Labels are written in sorted order into the file rather than passed as the API's
    labels parameter, which podman applies in map order: a different order each time,
    so the step would never be cached and every rebuild would get a new image id.
    """
    pairs = " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items()))
    text = f"FROM {image_id}\nLABEL {pairs}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member = tarfile.TarInfo("Containerfile")
        member.size = len(text)
        tar.addfile(member, io.BytesIO(text))
    return buffer.getvalue()


__all__ = [
    "BuildPlan",
    "ImageRef",
    "ImageStatus",
    "build",
    "ensure",
    "image_ref",
    "inspect",
    "list_images",
    "load",
    "plan",
    "remove",
    "rocm_targets",
    "save",
    "status",
]
