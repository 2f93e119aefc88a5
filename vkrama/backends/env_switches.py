"""Each backend's own switches: environment variables only its ggml library reads.

Stage: backends (facts about what each stack can do). Pure data: must not run, read files
or print. `vkrama tune` offers a switch of a stack as one more dimension (unset, or each
of `values`), but only one that the stack's image reads: `images.library` finds the names
in the image's shipped libraries, so a switch this table knows and the image's ggml does
not (another llama.cpp build) is never set, and one the user names that neither knows is
refused.

Names and meanings from ggml's sources (ggml-vulkan.cpp, ggml-cuda; ggml 0.27.0 as the
images ship it); each Vulkan name was checked against the vulkan image's
libggml-vulkan.so (tests/test_env_switches.py does it again on the real image).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class EnvSwitch:
    """One environment switch of one backend's ggml."""

    name: str  # the variable: "GGML_VK_DISABLE_COOPMAT"
    backend: str  # the backend whose library reads it: "vulkan"
    meaning: str  # what setting it does, in the words a row or an error uses
    values: tuple[str, ...] = ("1",)  # what tune tries besides leaving it unset
    # It changes the arithmetic, not only the speed (another matmul path, f32 for f16):
    # a kept one must pass the output check before it wins.
    numerics: bool = False


SWITCHES = (
    EnvSwitch("GGML_VK_DISABLE_COOPMAT", "vulkan", "no cooperative-matrix matmul", numerics=True),
    EnvSwitch("GGML_VK_DISABLE_COOPMAT2", "vulkan", "no NV coopmat2 matmul", numerics=True),
    EnvSwitch(
        "GGML_VK_DISABLE_INTEGER_DOT_PRODUCT",
        "vulkan",
        "no integer dot product for quantized matmul",
        numerics=True,
    ),
    EnvSwitch("GGML_VK_DISABLE_F16", "vulkan", "f32 where f16 would be used", numerics=True),
    EnvSwitch("GGML_VK_DISABLE_FUSION", "vulkan", "no fused operations"),
    EnvSwitch("GGML_VK_DISABLE_GRAPH_OPTIMIZE", "vulkan", "no graph reordering"),
    EnvSwitch("GGML_VK_DISABLE_MMVQ", "vulkan", "no quantized matrix-vector path", numerics=True),
    EnvSwitch(
        "GGML_VK_FORCE_MMVQ", "vulkan", "always the quantized matrix-vector path", numerics=True
    ),
    EnvSwitch("GGML_VK_PREFER_HOST_MEMORY", "vulkan", "host memory before device memory"),
    # the source says it can help on RADV (AMD's compute queue is slower to submit to)
    EnvSwitch("GGML_VK_ALLOW_GRAPHICS_QUEUE", "vulkan", "the graphics queue for compute"),
    EnvSwitch("GGML_VK_ASYNC_USE_TRANSFER_QUEUE", "vulkan", "a transfer queue for async copies"),
    EnvSwitch("GGML_CUDA_FORCE_MMQ", "cuda", "quantized matmul kernels, not cuBLAS", numerics=True),
    EnvSwitch("GGML_CUDA_GRAPH_OPT", "cuda", "CUDA graph optimisation"),
    EnvSwitch("GGML_CUDA_PDL", "cuda", "programmatic dependent launch"),
    EnvSwitch("GGML_CUDA_DISABLE_FUSION", "cuda", "no fused operations"),
    # rocBLAS's own: hipBLASLt for its GEMMs (published Strix Halo calibrations: +155 % pp)
    EnvSwitch("ROCBLAS_USE_HIPBLASLT", "rocm", "hipBLASLt for rocBLAS's GEMMs", numerics=True),
)
BY_NAME = {switch.name: switch for switch in SWITCHES}
# The names an image's libraries are searched for: every variable of these prefixes.
PREFIXES = ("GGML_VK_", "GGML_CUDA_", "GGML_HIP_", "ROCBLAS_", "HIPBLASLT_")


def of_backend(backend: str) -> tuple[EnvSwitch, ...]:
    """The switches of one backend, in the table's order (tune's search order)."""
    return tuple(switch for switch in SWITCHES if switch.backend == backend)


def is_switch(key: str) -> bool:
    """A tuned configuration's key that is an environment switch, not a llama.cpp flag."""
    return key.startswith(PREFIXES)


def changes_numerics(key: str) -> bool:
    """A tuned configuration's key that is a switch of this table changing the arithmetic."""
    switch = BY_NAME.get(key)
    return switch is not None and switch.numerics


def env_of(flags: Mapping[str, str]) -> dict[str, str]:
    """The switches a configuration sets (a value of "" leaves the variable unset)."""
    return {key: value for key, value in flags.items() if is_switch(key) and value}
