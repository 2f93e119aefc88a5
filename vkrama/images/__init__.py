"""The images stage: one llama.cpp image per backend, built from vkrama's recipes.

`images.ensure(engine, backend)` ─► image, reused or built. Modules: `planning` (the
`BuildPlan` a build sends and `--dry-run` prints), `building` (build, ensure: the build and
its provenance labels), `local` (the images here: list, inspect, remove, save, load),
`recipes` (the Containerfiles and their base images), `provenance` (what an image says
about itself), `rocm` (which rocm recipe, for which gfx targets), `oneapi` (the wheels
the oneapi recipe pins), `fetch` (what a build takes from outside Debian, fetched once into
the cache and sha256-checked), `library` (the environment switches an image's libraries
read). podman is reached only
through `vkrama.engine.images`. Must not print or import click. This file only re-exports.
"""

from vkrama.images import rocm
from vkrama.images.building import build, ensure, stage
from vkrama.images.local import (
    ImageRef,
    ImageStatus,
    inspect,
    list_images,
    load,
    remove,
    save,
    status,
    tags,
)
from vkrama.images.planning import BuildPlan, image_ref, llama_source, plan, rocm_targets

__all__ = [
    "BuildPlan",
    "ImageRef",
    "ImageStatus",
    "build",
    "ensure",
    "image_ref",
    "inspect",
    "list_images",
    "llama_source",
    "load",
    "plan",
    "remove",
    "rocm",
    "rocm_targets",
    "save",
    "stage",
    "status",
    "tags",
]
