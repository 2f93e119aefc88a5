"""The images vkrama has here: one per backend, listed, inspected, removed, saved, loaded.

Stage: images (`images list`, `inspect`, `remove`, `save`, `load`). Reads what podman
holds through `vkrama.engine.images` and the provenance labels vkrama's builds put there;
never builds, never prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from vkrama.engine import archives
from vkrama.engine import images as engine_images
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images.planning import REPOSITORY, image_ref
from vkrama.images.provenance import provenance_from_labels, stack_version
from vkrama.images.recipes import available, recipe
from vkrama.progress import NULL, Reporter

if TYPE_CHECKING:
    from vkrama.engine import Engine


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
    archives.save(engine, refs, destination, on_progress)
    return refs


def load(engine: Engine, source: Path) -> list[str]:
    """Load an archive written by `save`; the image names it held."""
    if not source.is_file():
        raise VkramaError(f"{source}: no such file", status=ExitStatus.NOT_FOUND)
    return archives.load(engine, source)


def built(engine: Engine, backend: str) -> ImageRef | None:
    """The backend's current image (`image_ref`); None while it is not built."""
    return status(engine, backend).image
