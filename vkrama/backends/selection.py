"""Which backend to run with: `choose()`, `usable()`, `support()`, `splits()`, `ranked()`.

Stage: backends (HardwareProfile ─► `choose()` / `usable()` / `support()` ─► `Choice`:
backend, Vulkan driver, devices, numeric groups, environment, reason). Pure: reads only the
profile it is given; never looks at the host, never prints. The per-cell rules live in
`cells` (`nogpu` for those that need no GPU), several GPUs in `multi`.
"""

from __future__ import annotations

from dataclasses import replace

from vkrama.backends.cells import (
    BACKENDS,
    VK_DRIVER_OF_KERNEL,
    VK_DRIVERS,
    Choice,
    Support,
    check,
    missing,
)
from vkrama.backends.multi import GpuSelection, merge, single
from vkrama.backends.nogpu import cpu_cell, lavapipe_cell, sycl_cpu_cell
from vkrama.errors import ExitStatus, VkramaError
from vkrama.hardware import Gpu, HardwareProfile

# -ngl for "every layer on the GPU", for serve and bench alike: llama.cpp clamps it to the
# model's layer count. (99, the scoreboards' habit, would leave layers of a deeper model
# on the CPU.)
ALL_LAYERS = 999


def support(profile: HardwareProfile, hsa_override: bool = False) -> list[Support]:
    """Every cell, usable or not: cpu, lavapipe and the SYCL CPU device first, then each
    backend per GPU."""
    cells = [cpu_cell(), lavapipe_cell(), sycl_cpu_cell()]
    if not profile.gpus:
        cells += [
            Support(backend, None, None, missing(profile, backend)) for backend in BACKENDS[1:]
        ]
    for gpu in profile.gpus:
        cells += [check(profile, backend, gpu, hsa_override) for backend in BACKENDS[1:]]
    return cells


def usable(profile: HardwareProfile, hsa_override: bool = False) -> list[Choice]:
    """Every usable (backend, driver, GPU) cell, cpu and lavapipe included."""
    return [cell.choice for cell in support(profile, hsa_override) if cell.choice]


def choose(
    profile: HardwareProfile,
    backend: str = "auto",
    gpu: GpuSelection = None,
    vk_driver: str | None = None,
    hsa_override: bool = False,
    split_mode: str | None = None,
    tensor_split: tuple[float, ...] = (),
) -> Choice:
    """The backend and passthrough to run with; VkramaError(BACKEND_UNAVAILABLE) says why not.

    `gpu` as a tuple or "all": one model split over several GPUs (see `multi`)."""
    if gpu == "each":
        raise VkramaError(
            "--gpu each applies to `vkrama bench` only",
            hint="serve on several GPUs with --gpu 0,1 or --gpu all",
            status=ExitStatus.USAGE,
        )
    if isinstance(gpu, tuple) and len(gpu) == 1:
        gpu = gpu[0]
    if isinstance(gpu, tuple) or gpu == "all":
        return _choose_split(
            profile, backend, gpu, vk_driver, hsa_override, split_mode, tensor_split
        )
    assert gpu is None or isinstance(gpu, int)
    return single(
        _choose_one(profile, backend, gpu, vk_driver, hsa_override), split_mode, tensor_split
    )


def _choose_split(
    profile: HardwareProfile,
    backend: str,
    gpus: tuple[int, ...] | str,
    vk_driver: str | None,
    hsa_override: bool,
    split_mode: str | None,
    tensor_split: tuple[float, ...],
) -> Choice:
    """Several GPUs under one backend: each chosen alone first (so every refusal keeps its
    reason), then merged. Vulkan may mix drivers: each GPU through its own."""
    if backend == "auto":
        first = gpus[0] if isinstance(gpus, tuple) else None
        picked = _choose_one(profile, "auto", first, vk_driver, hsa_override)
        if picked.gpu is None:
            return picked  # no usable GPU: auto already explains why it fell back to cpu
        backend = picked.backend  # Vulkan: each GPU then gets its own driver
    if isinstance(gpus, tuple):
        choices = [_choose_one(profile, backend, i, vk_driver, hsa_override) for i in gpus]
    else:
        cells = [check(profile, backend, g, hsa_override) for g in profile.gpus]
        choices = [
            c.choice
            for c in cells
            if c.choice and c.choice.gpu and (vk_driver is None or c.driver == vk_driver)
        ]
        if not choices:
            return _choose_one(profile, backend, None, vk_driver, hsa_override)  # says why not
    if len(choices) == 1:
        return single(choices[0], split_mode, tensor_split)
    if backend == "rocm":
        overrides = {c.env.get("HSA_OVERRIDE_GFX_VERSION") for c in choices}
        if len(overrides) > 1:
            raise VkramaError(
                "rocm cannot split over these GPUs: HSA_OVERRIDE_GFX_VERSION would apply to all "
                "of them, but only some need it",
                hint="split on vulkan instead, or pick GPUs of one generation",
                status=ExitStatus.BACKEND_UNAVAILABLE,
            )
    return merge(choices, split_mode, tensor_split)


def _choose_one(
    profile: HardwareProfile,
    backend: str = "auto",
    gpu: int | None = None,
    vk_driver: str | None = None,
    hsa_override: bool = False,
) -> Choice:
    if backend not in (*BACKENDS, "auto"):
        raise VkramaError(
            f"unknown backend {backend!r}",
            hint=f"one of: auto, {', '.join(BACKENDS)}",
            status=ExitStatus.USAGE,
        )
    if vk_driver is not None and vk_driver not in VK_DRIVERS:
        raise VkramaError(
            f"unknown Vulkan driver {vk_driver!r}",
            hint=f"one of: {', '.join(VK_DRIVERS)}",
            status=ExitStatus.USAGE,
        )
    if vk_driver and backend not in ("auto", "vulkan"):
        raise VkramaError(
            f"--vk-driver applies to the vulkan backend, not {backend}", status=ExitStatus.USAGE
        )
    backend = "vulkan" if vk_driver else backend
    if gpu is not None and (backend == "cpu" or vk_driver == "lavapipe"):
        what = "lavapipe" if vk_driver else "cpu"
        raise VkramaError(
            f"--gpu does not apply to {what}, which runs on the CPU", status=ExitStatus.USAGE
        )
    if backend == "cpu":
        return cpu_cell().choice  # type: ignore[return-value]
    if vk_driver == "lavapipe":
        return lavapipe_cell().choice  # type: ignore[return-value]
    if gpu is not None and not 0 <= gpu < len(profile.gpus):
        count = len(profile.gpus)
        have = (
            f"{count} GPU{'s' if count > 1 else ''} (0-{count - 1})" if count > 1 else "one GPU (0)"
        )
        have = have if count else "no GPU"
        raise VkramaError(
            f"no GPU {gpu}: this host has {have}",
            hint="`vkrama devices` lists them",
            status=ExitStatus.BACKEND_UNAVAILABLE,
        )
    candidates = [profile.gpus[gpu]] if gpu is not None else ranked(profile)
    if backend == "auto":
        return _auto(profile, candidates, gpu is not None, hsa_override)
    cells = [check(profile, backend, g, hsa_override) for g in candidates]
    cells = [c for c in cells if vk_driver is None or c.driver == vk_driver]
    for cell in cells:
        if cell.choice:
            return cell.choice
    if backend == "vulkan" and not profile.gpus and vk_driver is None:
        # With no GPU at all, Vulkan can only mean Mesa's software driver; say so.
        choice = lavapipe_cell().choice
        assert choice is not None
        return replace(choice, reason=f"no GPU here: {choice.reason}")
    if backend == "oneapi" and gpu is None and not any(c.applies for c in cells):
        # With no Intel GPU, SYCL can only mean Intel's OpenCL CPU device; say so.
        choice = sycl_cpu_cell().choice
        assert choice is not None
        return replace(choice, reason=f"no Intel GPU here: {choice.reason}")
    relevant = sorted((c for c in cells if c.applies), key=lambda c: c.gpu.index if c.gpu else -1)
    if vk_driver and not relevant:
        kernels = "/".join(k for k, d in VK_DRIVER_OF_KERNEL.items() if d == vk_driver)
        why = f"{'no GPU' if gpu is None else f'GPU {gpu} is not'} on {kernels} for {vk_driver}"
    elif relevant:
        why = "; ".join(f"GPU {c.gpu.index}: {c.reason}" if c.gpu else c.reason for c in relevant)
    elif gpu is not None:
        why = f"GPU {gpu}: {cells[0].reason}"
    else:
        why = missing(profile, backend)
    raise Unavailable(backend, why)


class Unavailable(VkramaError):
    """A backend this host cannot run; `why` is the reason alone, for a bench cell that
    records it under its own status."""

    def __init__(self, backend: str, why: str) -> None:
        super().__init__(
            f"{backend} is unavailable here: {why}",
            hint="`vkrama devices` shows what works here; cpu and --vk-driver lavapipe need no GPU",
            status=ExitStatus.BACKEND_UNAVAILABLE,
        )
        self.why = why


def splits(profile: HardwareProfile) -> list[Choice]:
    """Per GPU stack, the split over every GPU it can use (Vulkan: across vendors, each GPU
    through its own driver); only stacks that can use two or more GPUs here."""
    found = []
    for backend in BACKENDS[1:]:
        try:
            choice = choose(profile, backend, "all")
        except VkramaError:
            continue
        if len(choice.gpus) > 1:
            found.append(choice)
    return found


def ranked(profile: HardwareProfile) -> list[Gpu]:
    """GPUs, likeliest-fastest first: NVIDIA, AMD, then Intel (mostly iGPUs); more VRAM first."""
    order = {"10de": 0, "1002": 1, "8086": 2}
    return sorted(
        profile.gpus, key=lambda g: (order.get(g.vendor_id, 3), -(g.memory_bytes or 0), g.index)
    )


def _auto(
    profile: HardwareProfile, candidates: list[Gpu], pinned: bool, hsa_override: bool
) -> Choice:
    """A sensible default: the best stack for the likeliest-fastest usable GPU."""
    tried = []
    for gpu in candidates:
        for backend in _preference(gpu):
            cell = check(profile, backend, gpu, hsa_override)
            if cell.choice:
                why = AUTO_WHY.get(cell.choice.cell, "")
                return replace(cell.choice, reason=f"auto: {cell.reason}{why}")
            tried.append(f"GPU {gpu.index} {backend}: {cell.reason}")
        if not _preference(gpu):
            tried.append(f"GPU {gpu.index}: no GPU stack for {gpu.kernel_driver or 'no driver'}")
    if pinned:
        raise VkramaError(
            f"nothing can use GPU {candidates[0].index}: {'; '.join(tried)}",
            hint="`vkrama devices` shows what works here",
            status=ExitStatus.BACKEND_UNAVAILABLE,
        )
    cpu = cpu_cell().choice
    assert cpu is not None
    why = "no GPU found" if not profile.gpus else "no usable GPU (" + "; ".join(tried) + ")"
    return replace(cpu, reason=f"auto: {why}; cpu is faster than lavapipe")


def _preference(gpu: Gpu) -> tuple[str, ...]:
    return {
        "amdgpu": ("vulkan", "rocm"),
        "i915": ("vulkan", "oneapi"),
        "xe": ("vulkan", "oneapi"),
        "nvidia": ("cuda", "vulkan"),
        "nouveau": ("vulkan",),
    }.get(gpu.kernel_driver, ())


AUTO_WHY = {
    "vulkan/radv": "; RADV needs only the render node and the smaller image, and is often as fast "
    "as ROCm for generation (`vkrama bench` measures both)",
    "vulkan/anv": "; ANV ships in Mesa and needs only the render node; oneAPI's image is "
    "1.4 GB of Intel's runtime around a third-party SYCL build (`vkrama bench` measures both)",
    "cuda": "; CUDA is NVIDIA's most mature ggml backend",
    "vulkan/nvk": "; NVK is the only GPU stack on nouveau",
}
