"""Persistent caches for the GPU code a backend compiles when a container starts.

Stage: planning (shared by server.plan and bench.plan). Mesa compiles ggml's Vulkan
pipelines and NVIDIA's driver JIT-compiles CUDA kernels on every start of a fresh
container; a host directory that outlives the containers makes every start after the
first one fast (lavapipe here: 7.3 s to 0.66 s to ready; H100 cuda: 44 s to 1.3 s).
Only `ensure` touches the file system; nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vkrama.errors import disk_errors

CONTAINER_ROOT = "/cache"

# backend -> (directory name, the variable that points the stack at it)
_CACHES = {
    "vulkan": ("mesa", "MESA_SHADER_CACHE_DIR"),
    "cuda": ("cuda", "CUDA_CACHE_PATH"),
}


@dataclass(frozen=True)
class CompileCache:
    """A host directory mounted writable into the container, and the variable naming it."""

    host_dir: Path
    target: str
    variable: str


def for_backend(home: Path, backend: str) -> CompileCache | None:
    """The cache this backend's stack uses, under vkrama's home; None if it compiles nothing."""
    if backend not in _CACHES:
        return None
    name, variable = _CACHES[backend]
    return CompileCache(home / "cache" / name, f"{CONTAINER_ROOT}/{name}", variable)


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
