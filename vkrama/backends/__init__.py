"""The backends stage: which llama.cpp stack can drive which GPU here, and why.

HardwareProfile ─► `choose()` / `usable()` / `support()` ─► `Choice` (backend, Vulkan driver,
devices, numeric groups, environment, reason). Modules: `selection` (choose, usable,
support, splits, ranked), `cells` (the compatibility table cell by cell: `Choice`,
`Support`, `Split`), `nogpu` (the cells that need no GPU: cpu, lavapipe, the SYCL CPU
device), `multi` (one model over several GPUs: `--gpu 0,1|all|each`),
`targets` (the gfx targets each ROCm build covers), `compile_cache` (the shader and kernel
caches a container keeps), `env_switches` (each backend's own environment switches).
Pure: reads only the profile it is given; never looks at the
host, never prints. This file only re-exports.
"""

from vkrama.backends.cells import (
    BACKENDS,
    MESA_ICDS,
    SYCL_CPU,
    VK_DRIVERS,
    Choice,
    Support,
    check,
)
from vkrama.backends.multi import GpuSelection, check_split, merge, parse_gpus
from vkrama.backends.nogpu import SYCL_CPU_NOTE, is_test_device
from vkrama.backends.selection import (
    ALL_LAYERS,
    Unavailable,
    choose,
    ranked,
    splits,
    support,
    usable,
)
from vkrama.backends.targets import HIP_TARGETS, ROCM7_TARGETS, hsa_override_for

__all__ = [
    "ALL_LAYERS",
    "BACKENDS",
    "HIP_TARGETS",
    "MESA_ICDS",
    "ROCM7_TARGETS",
    "SYCL_CPU",
    "SYCL_CPU_NOTE",
    "VK_DRIVERS",
    "Choice",
    "GpuSelection",
    "Support",
    "Unavailable",
    "check",
    "check_split",
    "choose",
    "hsa_override_for",
    "is_test_device",
    "merge",
    "parse_gpus",
    "ranked",
    "splits",
    "support",
    "usable",
]
