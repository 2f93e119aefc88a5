"""Building a backend's image: the planned build, its provenance labels, build on first use.

Stage: images (`images.ensure(engine, backend)` ─► image, reused or built). Runs a
`BuildPlan` through `vkrama.engine.images`, records what the image says about itself as
labels, and reports each build line to a `Reporter`. Must not print or import click.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from vkrama.config import Settings
from vkrama.engine import images as engine_images
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images import library, local, oneapi, recipes, rocm
from vkrama.images.local import ImageRef
from vkrama.images.planning import BuildPlan, image_ref, plan
from vkrama.images.provenance import PROVENANCE_PATH, parse_provenance_json, provenance_labels
from vkrama.progress import NULL, BuildProgress, Event, Reporter

if TYPE_CHECKING:
    from vkrama.engine import Engine


def build(engine: Engine, build_plan: BuildPlan, on_progress: Reporter = NULL) -> ImageRef:
    """Build the planned image, record its provenance as labels, tag it; the image."""
    backend = build_plan.recipe.backend
    _check_bases(engine, build_plan)
    last = BuildProgress(backend, 0, 0, "")

    def relay(event: Event) -> None:
        # Remembers the step reached: a failure and the provenance line name it.
        nonlocal last
        if isinstance(event, BuildProgress):
            last = event
        on_progress(event)

    if build_plan.staged is not None:
        stage(build_plan, relay)
    try:
        built = engine_images.build(
            engine,
            build_plan.context,
            build_plan.recipe.path.name,
            build_args=build_plan.build_args,
            no_cache=build_plan.no_cache,
            on_progress=relay,
            what=backend,
        )
    except VkramaError as error:
        where = f" at step {last.step}/{last.total}" if last.total else ""
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
    summary = ", ".join(f"{k}={v}" for k, v in recorded.items() if k != "llama_cpp_version")
    on_progress(BuildProgress(backend, last.step, last.total, f"provenance: {summary}"))
    recorded.update(_switches(engine, built, backend, last, on_progress))
    labels = {**provenance_labels(recorded), **build_plan.labels}
    final = engine_images.build(
        engine, _label_context(built, labels), "Containerfile", tags=build_plan.tags
    )
    image = local.built(engine, backend)
    assert image is not None and image.id == final, "podman tagged another image"
    return image


def _switches(
    engine: Engine, built: str, backend: str, last: BuildProgress, on_progress: Reporter
) -> dict[str, str]:
    """The environment switch names the built image's libraries contain, as a provenance
    field: found once here (one short container, no network) so that tune reads them from
    the label rather than running the image. A probe that fails leaves the field out
    (tune then probes itself) and never fails the build: the image itself is sound."""
    try:
        names = library.switches_read(engine, built)
    except VkramaError as error:
        said = f"environment switches not recorded: {error.message}"
        on_progress(BuildProgress(backend, last.step, last.total, said))
        return {}
    said = f"environment switches its libraries read: {len(names)}"
    on_progress(BuildProgress(backend, last.step, last.total, said))
    return {library.KEY: library.as_field(names)}


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
    image = local.built(engine, backend)
    if image is not None:
        if backend == "rocm":
            rocm.check_targets(image.provenance, gfx)
        return image
    recipes.recipe(backend)  # an unknown backend is a usage error before anything else
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


def _check_bases(engine: Engine, build_plan: BuildPlan) -> None:
    """Fail before the build when a base image is neither here nor reachable."""
    backend = build_plan.recipe.backend
    for base in build_plan.recipe.base_images(build_plan.build_args):
        if engine_images.inspect(engine, base) is not None:
            continue
        registry = recipes.registry_of(base)
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
        if not recipes.registry_reachable(registry):
            raise VkramaError(
                f"cannot build {backend}: {build_plan.recipe.base_description} {base} is not "
                f"in local storage and {registry} is not reachable from here",
                hint=hint,
                status=ExitStatus.IMAGE_UNAVAILABLE,
            )


def stage(build_plan: BuildPlan, on_progress: Reporter = NULL) -> None:
    """Assemble the staged context: the recipe and its files, and what it takes from outside
    Debian (fetched once into the cache, sha256 checked) under the names the recipe COPYs."""
    staged = build_plan.staged
    assert staged is not None
    staged.directory.mkdir(parents=True, exist_ok=True)
    for path in build_plan.recipe.inputs:
        shutil.copyfile(path, staged.directory / path.name)
    if staged.source is not None:
        source = rocm.fetch_source(
            staged.home, staged.source, on_progress, build_plan.recipe.backend
        )
        _place(source, staged.directory / rocm.SOURCE_NAME)
    if staged.wheels:
        wheels = oneapi.fetch_wheels(staged.home, staged.wheels, on_progress)
        # Only the pinned wheels: the build refuses any other file.
        for old in staged.directory.glob("*.whl"):
            if old.name not in {w.name for w in wheels}:
                old.unlink()
        for wheel in wheels:
            _place(wheel, staged.directory / wheel.name)


def _place(source: Path, target: Path) -> None:
    """`source` at `target` in the context: a hard link (no second copy of hundreds of
    MB) where the cache and the context share a file system, else a copy."""
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return  # placed by an earlier build (the oneapi build checks each wheel's sha256)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
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
