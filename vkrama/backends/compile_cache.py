"""Persistent caches for the GPU code a backend compiles when a container starts.

Stage: planning (shared by server.plan and bench.plan). Mesa compiles ggml's Vulkan
pipelines, NVIDIA's Vulkan driver does the same into its own cache, and NVIDIA's driver
JIT-compiles CUDA kernels, on every start of a fresh container; a host directory that
outlives the containers makes every start after the first one fast (lavapipe here: 7.3 s
to 0.66 s to ready; H100 cuda: 44 s to 1.3 s; H200 vulkan/nvidia without its cache: the
first repetition of a flash-attention test at a third of the rest, issue 26).
Only `ensure` touches the file system; nothing here prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vkrama.errors import disk_errors

CONTAINER_ROOT = "/cache"

MESA = "MESA_SHADER_CACHE_DIR"
CUDA = "CUDA_CACHE_PATH"
# NVIDIA's GL/Vulkan driver: it writes a GLCache folder inside a folder that must exist,
# and by default trims the cache to a size limit; a benchmark's pipelines must not be
# evicted between runs, hence the cleanup is skipped.
NVIDIA = "__GL_SHADER_DISK_CACHE_PATH"
NVIDIA_SKIP_CLEANUP = "__GL_SHADER_DISK_CACHE_SKIP_CLEANUP"


@dataclass(frozen=True)
class CompileCache:
    """A host directory mounted writable into the container, and the variables naming it."""

    host_dir: Path
    target: str
    variables: tuple[str, ...]  # each set to `target`
    settings: Mapping[str, str] = field(default_factory=dict)  # other variables the stack reads

    @property
    def env(self) -> dict[str, str]:
        """What the container's environment gets: the variables and settings."""
        return {**dict.fromkeys(self.variables, self.target), **self.settings}


def for_backend(home: Path, backend: str, driver: str | None = None) -> CompileCache | None:
    """The cache this backend's stack uses, under vkrama's home; None if it compiles nothing.

    `driver` is a vulkan choice's ("radv", "nvidia", "radv+nvidia"): NVIDIA's driver keeps its
    pipelines apart from Mesa's. A split over both drivers shares one folder: Mesa writes
    its own subfolders and NVIDIA a GLCache one, so they never meet."""
    if backend == "cuda":
        return _cache(home, "cuda", (CUDA,))
    if backend != "vulkan":
        return None
    drivers = set((driver or "").split("+"))
    nvidia = "nvidia" in drivers
    mesa = not nvidia or len(drivers) > 1
    variables = ((MESA,) if mesa else ()) + ((NVIDIA,) if nvidia else ())
    settings = {NVIDIA_SKIP_CLEANUP: "1"} if nvidia else {}
    return _cache(home, "mesa" if mesa else "nvidia", variables, settings)


def _cache(
    home: Path, name: str, variables: tuple[str, ...], settings: Mapping[str, str] | None = None
) -> CompileCache:
    return CompileCache(
        home / "cache" / name, f"{CONTAINER_ROOT}/{name}", variables, settings or {}
    )


def ensure(cache: CompileCache) -> None:
    """Create the directory so that the containers' non-root user can write it.

    A home that is read-only, full or not ours (EACCES) is the user's to fix: a DISK error.
    """
    with disk_errors("preparing the compile cache", cache.host_dir):
        if cache.host_dir.is_dir():  # raises too when a parent folder may not be entered
            return
        cache.host_dir.mkdir(parents=True)
        # Writable for every uid: the container's user maps to another host uid under
        # rootless podman. Only compiled GPU code lives here.
        cache.host_dir.chmod(0o777)
