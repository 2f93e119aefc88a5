"""What actually ran: ggml's stderr (and llama-bench's `backends`) read back into facts.

Stage: after a bench cell's container exits, before its numbers are accepted. Pure text in,
facts out; must not run anything. A cell whose requested backend or Vulkan driver did not
run is failed here with the reason, so that a silent CPU fall-back never shows as numbers.

Formats (from ggml's sources and seen in the images):
  ggml_vulkan: Found 1 Vulkan devices:
  ggml_vulkan: 0 = llvmpipe (LLVM 22.1.8, 256 bits) (llvmpipe) | uma: 0 | fp16: 1 | …
  ggml_vulkan: No devices found.
  ggml_cuda_init: found 1 CUDA devices:            (ROCm builds say "ROCm devices";
  ggml_cuda_init: found 1 CUDA devices (Total VRAM: 81079 MiB):   newer builds add VRAM)
    Device 0: NVIDIA H100 80GB HBM3, compute capability 9.0, VMM: yes
    Device 0: AMD Radeon RX 7900 XTX, gfx1100 (0x1100), VMM: no, Wave Size: 32
  ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected
  Found 1 SYCL devices:  …  | 0| [level_zero:gpu:0]|  Intel Arc A770 Graphics|  1.6| …
  SYCL Optimization Feature:  …  | 0|     [opencl:cpu:0]|      N|   (a second table: not a device)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from vkrama.backends import SYCL_CPU

# The Vulkan driver name (VkPhysicalDeviceDriverProperties.driverName) each vkrama driver
# choice must produce; compared case-insensitively.
EXPECTED_VK_DRIVER_NAMES: dict[str, tuple[str, ...]] = {
    "radv": ("radv",),
    "anv": ("intel open-source mesa driver", "anv"),
    "nvk": ("nvk",),
    "nvidia": ("nvidia",),
    "lavapipe": ("llvmpipe", "lavapipe"),
}

# llama-bench's `backends` field names each backend by ggml's registry name.
BACKEND_REGISTRY_NAMES = {
    "vulkan": "Vulkan",
    "cuda": "CUDA",
    "rocm": "ROCm",
    "oneapi": "SYCL",
    "cpu": "CPU",
}

_VK_DEVICE = re.compile(r"ggml_vulkan: (\d+) = (.*) \(([^()]*)\) \| uma:")
_VK_NONE = re.compile(r"ggml_vulkan: No devices found")
_CUDA_FOUND = re.compile(r"ggml_cuda_init: found (\d+) (CUDA|ROCm|MUSA) devices")
_CUDA_DEVICE = re.compile(r"^\s+Device (\d+): ([^,]+)(?:, (.*))?$")
_CUDA_FAILED = re.compile(r"ggml_cuda_init: failed to initialize (\w+): (.*)$")
_SYCL_FOUND = re.compile(r"[Ff]ound (\d+) SYCL devices")
_SYCL_TABLE_END = re.compile(r"SYCL Optimization Feature")
# llama-server (at -lv 4) names each device it loads the model onto, without the driver:
# `llama_prepare_model_devices: using device Vulkan0 (llvmpipe (LLVM 22.1.8, 256 bits))
# (unknown id) - 22233 MiB free` (one line)
_SERVER_DEVICE = re.compile(
    r"using device (Vulkan|CUDA|ROCm|SYCL|MUSA)(\d+) \((.*)\) \([^()]*\) - "
)
_SYCL_DEVICE = re.compile(r"^\|\s*(\d+)\|\s*\[([^\]]+)\]\|\s*([^|]*?)\s*\|")


@dataclass(frozen=True)
class SeenDevice:
    """One device ggml announced: its API, index, name and driver (or detail)."""

    api: str  # "Vulkan", "CUDA", "ROCm", "SYCL"
    index: int
    name: str
    # Vulkan driver name; for CUDA/ROCm the detail after the name; for SYCL the device's
    # backend:type:index ("level_zero:gpu:0", "opencl:cpu:0")
    driver: str = ""

    @property
    def label(self) -> str:
        named = self.api in ("Vulkan", "SYCL") and self.driver
        return f"{self.name} ({self.driver})" if named else self.name


@dataclass(frozen=True)
class Observed:
    """Everything ggml told us about devices in one cell's stderr."""

    devices: tuple[SeenDevice, ...] = ()
    vulkan_none: bool = False
    gpu_init_error: str | None = None

    def of(self, api: str) -> list[SeenDevice]:
        return [device for device in self.devices if device.api == api]


def observe(stderr: str) -> Observed:
    """Parse ggml's device announcements out of a cell's stderr."""
    devices: list[SeenDevice] = []
    vulkan_none = False
    init_error: str | None = None
    cuda_api: str | None = None
    in_sycl = False
    for line in stderr.splitlines():
        if match := _VK_DEVICE.search(line):
            devices.append(SeenDevice("Vulkan", int(match[1]), match[2].strip(), match[3]))
        elif _VK_NONE.search(line):
            vulkan_none = True
        elif match := _CUDA_FOUND.search(line):
            cuda_api = match[2]
        elif match := _CUDA_FAILED.search(line):
            init_error = f"{match[1]}: {match[2].strip()}"
        elif cuda_api and (match := _CUDA_DEVICE.match(line)):
            devices.append(SeenDevice(cuda_api, int(match[1]), match[2].strip(), match[3] or ""))
        elif match := _SYCL_FOUND.search(line):
            in_sycl = int(match[1]) > 0
        elif _SYCL_TABLE_END.search(line):
            in_sycl = False
        elif in_sycl and (match := _SYCL_DEVICE.match(line)):
            devices.append(SeenDevice("SYCL", int(match[1]), match[3], match[2]))
        elif (match := _SERVER_DEVICE.search(line)) and not any(
            (d.api, d.index) == (match[1], int(match[2])) for d in devices
        ):
            devices.append(SeenDevice(match[1], int(match[2]), match[3].strip()))
    return Observed(tuple(devices), vulkan_none, init_error)


def verify(
    backend: str,
    driver: str | None,
    observed: Observed,
    bench_backends: Sequence[str],
    gpu_infos: Sequence[str] = (),
    gpu_count: int = 1,
) -> tuple[str | None, SeenDevice | None]:
    """(failure reason or None, the device that ran) for a cell that asked for backend/driver.

    `gpu_count` > 1: a split cell, which must have run on that many devices (for Vulkan,
    `driver` is then "radv+nvidia"-like and every device must be one of those drivers).

    `bench_backends` is llama-bench's `backends` field of each result (e.g. "Vulkan",
    "CPU", "CUDA,BLAS"): the backends llama.cpp was built with, which names Vulkan even
    when Vulkan found no device. `gpu_infos` is its `gpu_info` field: empty when no GPU
    device was used, which is the tell-tale of a silent CPU fall-back.
    """
    used = {name.strip() for entry in bench_backends for name in entry.split(",") if name}
    if backend == "cpu":
        gpus = [name for name in used if name not in {"CPU", "BLAS", ""}]
        if gpus:
            return f"cpu cell ran on {', '.join(sorted(gpus))}", None
        return None, None
    api = BACKEND_REGISTRY_NAMES.get(backend, backend)
    seen = observed.of(api)
    if api == "Vulkan" and observed.vulkan_none and not seen:
        return "ggml_vulkan: No devices found (llama.cpp fell back to the CPU)", None
    if observed.gpu_init_error and not seen:
        return f"ggml could not initialise {observed.gpu_init_error}", None
    if not seen:
        return f"ggml announced no {api} device: llama.cpp fell back to the CPU", None
    if used and api not in used:
        return (
            f"llama-bench reports backends {', '.join(sorted(used))}, not {api}: "
            "the cell fell back to the CPU",
            None,
        )
    if gpu_infos and not any(info.strip() for info in gpu_infos):
        return "llama-bench reports no GPU (empty gpu_info): the cell fell back to the CPU", None
    if gpu_count > 1:
        return _verify_split(api, driver, seen, gpu_count)
    device = seen[0]
    if api == "SYCL" and device.driver:
        # The SYCL CPU device must be the CPU; a GPU cell must not have run on it.
        kind = [*device.driver.split(":"), ""][1]
        asked = "cpu" if driver == SYCL_CPU else "gpu"
        if kind and kind != asked:
            return f"asked for a SYCL {asked} device, but ggml ran on {device.label}", device
    # llama-server names devices without their driver; the cell's VK_DRIVER_FILES then
    # made that driver's ICD the only one ggml could find.
    if api == "Vulkan" and driver is not None and any(d.driver for d in seen):
        wanted = EXPECTED_VK_DRIVER_NAMES.get(driver, (driver,))
        matching = [d for d in seen if d.driver.strip().lower() in wanted]
        if not matching:
            ran = ", ".join(f"{d.name} ({d.driver})" for d in seen)
            return f"asked for Vulkan driver {driver}, but ggml ran on {ran}", device
        device = matching[0]
        if len(seen) > 1:
            # With several devices visible ggml may split layers over all of them;
            # then the numbers are not this driver's alone.
            others = ", ".join(f"{d.name} ({d.driver})" for d in seen if d is not device)
            return f"ggml also used other Vulkan devices: {others}", device
    return None, device


def verify_rpc(
    bench_backends: Sequence[str], gpu_infos: Sequence[str], addresses: Sequence[str]
) -> str | None:
    """A split cell (bench --rpc): llama-bench must report the RPC backend and list every
    worker's address in `gpu_info` (seen in build 11669: `"backends": "RPC"`, `"gpu_info":
    "127.0.0.1:50052, 127.0.0.1:50053"`); else the failure reason."""
    used = {name.strip() for entry in bench_backends for name in entry.split(",") if name}
    if "RPC" not in used:
        ran = ", ".join(sorted(used)) or "none"
        return f"llama-bench reports backends {ran}, not RPC: the split did not run"
    for info in gpu_infos:
        listed = {part.strip() for part in info.split(",")}
        missing = [a for a in addresses if a not in listed]
        if missing:
            return f"llama-bench used no device of RPC worker {', '.join(missing)}"
    return None


def _verify_split(
    api: str, driver: str | None, seen: list[SeenDevice], count: int
) -> tuple[str | None, SeenDevice | None]:
    """A split cell: exactly `count` devices, each on one of the asked-for Vulkan drivers."""
    together = SeenDevice(api, 0, " + ".join(d.label for d in seen))
    if len(seen) != count:
        return f"asked to split over {count} GPUs, but ggml used {len(seen)}", together
    if api == "Vulkan" and driver is not None:
        wanted = {name: EXPECTED_VK_DRIVER_NAMES.get(name, (name,)) for name in driver.split("+")}
        for device in seen:
            if not any(device.driver.strip().lower() in names for names in wanted.values()):
                return (
                    f"asked for Vulkan drivers {driver}, but ggml ran on {device.label}",
                    together,
                )
        for name, names in wanted.items():
            if not any(d.driver.strip().lower() in names for d in seen):
                return f"asked for Vulkan drivers {driver}, but none of {name}", together
    return None, together
