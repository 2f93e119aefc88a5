"""The hardware stage: what this host has. /sys, /dev, CDI ─► `detect()` ─► `HardwareProfile`.

Modules: `profile` (GPUs and their device nodes, read from /sys and /dev), `kfd` (AMD's
compute topology: gfx targets, APUs), `cdi` (NVIDIA's CDI specs), `power` (each
device's energy or power counter: RAPL, hwmon, NVML). Reads files only: never
prints, never touches `os.environ`, caches nothing, and decides nothing about backends (that
is `vkrama.backends`, a later stage).
"""

from vkrama.hardware.cdi import CdiSpec, read_cdi_specs
from vkrama.hardware.kfd import gfx_name
from vkrama.hardware.profile import (
    DeviceNode,
    Gpu,
    HardwareProfile,
    detect,
    detect_host,
)

__all__ = [
    "CdiSpec",
    "DeviceNode",
    "Gpu",
    "HardwareProfile",
    "detect",
    "detect_host",
    "gfx_name",
    "read_cdi_specs",
]
