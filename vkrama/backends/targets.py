"""The gfx targets each ROCm build serves, and the override that stretches one to a near one.

Stage: part of backends (HardwareProfile ─► Choice). Pure data and arithmetic over target
names; never looks at the host or at images (the built image's own targets are checked by
`vkrama.images.rocm`), never prints.
"""

from __future__ import annotations

# Targets Debian's libggml0-backend-hip is compiled for (see ENVIRONMENT.md).
HIP_TARGETS = (
    "gfx803",
    "gfx900",
    "gfx906",
    "gfx908",
    "gfx90a",
    "gfx1010",
    "gfx1030",
    "gfx1100",
    "gfx1101",
    "gfx1102",
)
# Targets Debian experimental's ROCm 7.2.4 can serve: rocBLAS 5 (librocblas5 7.2.4) ships
# kernels for exactly these (its X-Rocm-Gpu-Architecture). The rocm image built from
# source (containerfiles/rocm7.Containerfile) compiles ggml's HIP backend for any of them.
ROCM7_TARGETS = (
    "gfx803",
    "gfx900",
    "gfx906",
    "gfx908",
    "gfx90a",
    "gfx942",
    "gfx1010",
    "gfx1030",
    "gfx1100",
    "gfx1101",
    "gfx1102",
    "gfx1151",
    "gfx1200",
    "gfx1201",
)


def hsa_override_for(target: str) -> str | None:
    """The HSA_OVERRIDE_GFX_VERSION that would make ROCm treat `target` as a supported one."""
    major, minor, _ = _gfx_parts(target)
    if major is None:
        return None
    same = [t for t in HIP_TARGETS if _gfx_parts(t)[:2] == (major, minor)]
    # Within RDNA generations (gfx10, gfx11) the ISA is close enough that users run this way.
    same = same or ([t for t in HIP_TARGETS if _gfx_parts(t)[0] == major] if major >= 10 else [])
    if not same:
        return None
    m, n, s = _gfx_parts(same[0])
    return f"{m}.{n}.{s}"


def _gfx_parts(target: str) -> tuple[int | None, int, int]:
    body = target.removeprefix("gfx")
    try:
        return int(body[:-2]), int(body[-2], 16), int(body[-1], 16)
    except (ValueError, IndexError):
        return None, 0, 0
