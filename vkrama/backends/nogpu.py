"""The cells that need no GPU: ggml's CPU backend, Mesa's lavapipe, the SYCL CPU device.

Stage: part of HardwareProfile ─► Choice. Pure: takes nothing, looks at nothing; never
prints. lavapipe and the SYCL CPU device run a GPU stack's whole path on the CPU, slowly:
they test a stack where no GPU of its kind is (`is_test_device` keeps the SYCL one out of
every ranking).
"""

from __future__ import annotations

from vkrama.backends.cells import MESA_ICDS, SYCL_CPU, Choice, Support


def cpu_cell() -> Support:
    reason = "always available: ggml's CPU backend"
    return Support("cpu", None, None, reason, Choice("cpu", None, None, reason=reason))


def lavapipe_cell() -> Support:
    reason = "Mesa's software Vulkan (llvmpipe): needs no GPU; slower than cpu"
    # ggml skips CPU-type Vulkan devices unless GGML_VK_VISIBLE_DEVICES names them.
    env = {"VK_DRIVER_FILES": MESA_ICDS["lavapipe"], "GGML_VK_VISIBLE_DEVICES": "0"}
    return Support(
        "vulkan",
        "lavapipe",
        None,
        reason,
        Choice("vulkan", "lavapipe", None, env=env, reason=reason),
    )


# The SYCL CPU device: Intel's OpenCL CPU runtime in the oneapi image, driving ggml's SYCL
# backend on hosts without an Intel GPU. What lavapipe is to Vulkan: a real run of the
# whole SYCL path, slow; a test device, never a contender (`is_test_device`).
SYCL_CPU_SHIM = "/opt/oneapi/cpu-device/libsycl-cpu-device.so"  # built into the image
SYCL_CPU_NOTE = (
    "SYCL on Intel's OpenCL CPU device: a test of the SYCL path, not a contender; "
    "flash attention off (the SYCL flash-attention kernel faults on this device)"
)


def sycl_cpu_cell() -> Support:
    reason = "SYCL on Intel's OpenCL CPU runtime: needs no GPU; a test device, slower than cpu"
    env = {
        # ggml's SYCL backend takes devices of a GPU platform only ("can not find preferred
        # GPU platform"): the image's shim makes sycl::device::is_gpu() answer true, and
        # the selector leaves the OpenCL CPU device as the only one to ask.
        "ONEAPI_DEVICE_SELECTOR": "opencl:cpu",
        "LD_PRELOAD": SYCL_CPU_SHIM,
        # The module's kernels ask for -ze-intel-greater-than-4GB-buffer-required, an option
        # of Intel's GPU compiler that the CPU device's compiler refuses.
        "SYCL_PROGRAM_COMPILE_OPTIONS": "",
        # The SYCL flash-attention kernel dies of SIGFPE on this device: ggml then reports
        # the op unsupported, and llama.cpp's automatic choice turns flash attention off.
        "GGML_SYCL_ENABLE_FLASH_ATTN": "0",
    }
    return Support(
        "oneapi", SYCL_CPU, None, reason, Choice("oneapi", SYCL_CPU, None, env=env, reason=reason)
    )


def is_test_device(backend: str, driver: str | None) -> bool:
    """Cells that test a stack on the CPU rather than measure a GPU: never ranked best."""
    return (backend, driver) == ("oneapi", SYCL_CPU)
