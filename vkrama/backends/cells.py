"""The compatibility table cell by cell: can a backend drive a GPU, with what passthrough.

Stage: part of HardwareProfile ─► Choice. Pure: reads only the profile it is given; never
looks at the host, never prints. `Split` (how one model spreads over several GPUs) is part
of a `Choice`; `multi` decides it. Every yes and every no carries a reason; a yes carries the
exact devices, numeric groups and environment a container needs to use that GPU and no other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vkrama.backends.targets import HIP_TARGETS, ROCM7_TARGETS, hsa_override_for
from vkrama.hardware import Gpu, HardwareProfile
from vkrama.hardware.cdi import GRAPHICS_FIX
from vkrama.llama_flags import FLAG

BACKENDS = ("cpu", "vulkan", "rocm", "cuda", "oneapi")
VK_DRIVERS = ("radv", "anv", "nvk", "nvidia", "lavapipe")
# The oneapi cell of Intel's OpenCL CPU device (see `nogpu`): "oneapi/opencl-cpu".
SYCL_CPU = "opencl-cpu"

# Mesa's ICD jsons inside the vulkan image; NVIDIA's comes from the host through CDI.
ICD_DIR = "/usr/share/vulkan/icd.d"
MESA_ICDS = {
    "lavapipe": f"{ICD_DIR}/lvp_icd.json",
    "radv": f"{ICD_DIR}/radeon_icd.json",
    "anv": f"{ICD_DIR}/intel_icd.json",
    "nvk": f"{ICD_DIR}/nouveau_icd.json",
}
VK_DRIVER_OF_KERNEL = {
    "amdgpu": "radv",
    "i915": "anv",
    "xe": "anv",
    "nouveau": "nvk",
    "nvidia": "nvidia",
}
NO_CDI_FIX = "run `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"


@dataclass(frozen=True)
class Split:
    """How llama.cpp spreads one model over several GPUs (its --split-mode, --tensor-split)."""

    mode: str = "layer"  # layer | row | none (llama.cpp's default is layer)
    weights: tuple[float, ...] = ()  # one per GPU, in ggml's device order; (): llama.cpp's own

    def server_args(self) -> tuple[str, ...]:
        """llama-server's spelling: --tensor-split 16,24."""
        ts = ("--tensor-split", ",".join(_number(w) for w in self.weights)) if self.weights else ()
        return (FLAG["sm"].server, self.mode, *ts)

    def bench_args(self) -> tuple[str, ...]:
        """llama-bench's spelling: -ts 16/24 (its commas separate values to sweep)."""
        ts = ("-ts", "/".join(_number(w) for w in self.weights)) if self.weights else ()
        return (FLAG["sm"].bench, self.mode, *ts)


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Choice:
    backend: str
    # Vulkan driver ("lavapipe", "radv", "radv+nvidia", …), oneapi's SYCL_CPU, else None
    driver: str | None
    gpu: Gpu | None  # the (first) GPU; `gpus` holds all of a split
    devices: tuple[str, ...] = ()  # host device paths or CDI names
    group_add: tuple[str, ...] = ()  # numeric gids owning those nodes (never 0)
    env: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    gpus: tuple[Gpu, ...] = ()  # several: one model split over them, in ggml's device order
    split: Split | None = None  # set when len(gpus) > 1

    @property
    def cell(self) -> str:
        """`vulkan/radv`, `rocm`, `cpu`: how tables and labels name this choice."""
        return f"{self.backend}/{self.driver}" if self.driver else self.backend

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        """The GPUs used, by host index, in the order given: (), (1,), (0, 1)."""
        return tuple(g.index for g in self.gpus or ((self.gpu,) if self.gpu else ()))

    @property
    def gfx_targets(self) -> tuple[str, ...]:
        """The AMD gfx targets of the GPUs used: what a rocm image must be compiled for."""
        gpus = self.gpus or ((self.gpu,) if self.gpu else ())
        return tuple(dict.fromkeys(g.gfx_target for g in gpus if g.gfx_target))

    @property
    def device_label(self) -> str:
        if self.driver == "lavapipe":
            return "llvmpipe (lavapipe)"
        if self.driver == SYCL_CPU:
            return "CPU (SYCL, Intel OpenCL CPU device)"
        return " + ".join(g.name for g in self.gpus) or (self.gpu.name if self.gpu else "CPU")


@dataclass(frozen=True)
class Support:
    """One cell of the compatibility table: can `backend` (with `driver`) run on `gpu`?"""

    backend: str
    driver: str | None
    gpu: Gpu | None
    reason: str
    choice: Choice | None = None  # set when usable
    applies: bool = True  # False: the GPU is not of the kind this backend drives at all

    @property
    def ok(self) -> bool:
        return self.choice is not None


def check(profile: HardwareProfile, backend: str, gpu: Gpu, hsa_override: bool = False) -> Support:
    """Can `backend` run on `gpu`, and if so with what passthrough."""
    checks: dict[str, Callable[[HardwareProfile, Gpu, bool], Support]] = {
        "vulkan": _vulkan,
        "rocm": _rocm,
        "cuda": _cuda,
        "oneapi": _oneapi,
    }
    return checks[backend](profile, gpu, hsa_override)


def _vulkan(profile: HardwareProfile, gpu: Gpu, _: bool) -> Support:
    driver = VK_DRIVER_OF_KERNEL.get(gpu.kernel_driver)
    if driver is None:
        return _not_for("vulkan", gpu, "no Vulkan driver")
    if driver == "nvidia":
        return _nvidia(profile, gpu, "vulkan")
    bad = _missing_node(profile, gpu)
    if bad:
        return Support("vulkan", driver, gpu, bad)
    # One ICD and one render node: the GPU is device 0 inside the container.
    env = {"VK_DRIVER_FILES": MESA_ICDS[driver], "GGML_VK_VISIBLE_DEVICES": "0"}
    reason = f"{gpu.kernel_driver} → Mesa {driver.upper()} on {gpu.render_node}"
    return Support(
        "vulkan", driver, gpu, reason, _render_choice(profile, "vulkan", driver, gpu, env, reason)
    )


def _rocm(profile: HardwareProfile, gpu: Gpu, hsa_override: bool) -> Support:
    if gpu.kernel_driver != "amdgpu":
        return _not_for("rocm", gpu, "not an AMD GPU on amdgpu")
    if not profile.kfd:
        return Support("rocm", None, gpu, "no /dev/kfd (amdgpu's compute interface)")
    if gpu.gfx_target is None:
        return Support("rocm", None, gpu, "not in the KFD topology (no gfx target)")
    bad = _missing_node(profile, gpu)
    if bad:
        return Support("rocm", None, gpu, bad)
    # sysfs topology is not namespaced, but ROCr only uses GPUs whose render node it can
    # open: with one render node passed, that GPU is device 0.
    env = {"HIP_VISIBLE_DEVICES": "0"}
    reason = f"amdgpu, /dev/kfd and {gpu.gfx_target}, which Debian's HIP build supports"
    if gpu.gfx_target not in HIP_TARGETS and gpu.gfx_target in ROCM7_TARGETS:
        # The image decides in the end (`images.check_targets`): it must be compiled for it.
        reason = (
            f"amdgpu, /dev/kfd and {gpu.gfx_target}: not in Debian's ROCm 6.4 HIP build, so the "
            f"rocm image is llama.cpp compiled with ROCm 7.2.4 for {gpu.gfx_target}"
        )
    elif gpu.gfx_target not in HIP_TARGETS:
        override = hsa_override_for(gpu.gfx_target)
        if override is None:
            return Support(
                "rocm",
                None,
                gpu,
                f"{gpu.gfx_target} is not in Debian's HIP build and has no close target",
            )
        if not hsa_override:
            return Support(
                "rocm",
                None,
                gpu,
                f"{gpu.gfx_target} is not in Debian's HIP build; "
                f"HSA_OVERRIDE_GFX_VERSION={override} may work (ask with --hsa-override)",
            )
        env["HSA_OVERRIDE_GFX_VERSION"] = override
        reason = f"{gpu.gfx_target} run as {override} via HSA_OVERRIDE_GFX_VERSION (asked for)"
    return Support(
        "rocm", None, gpu, reason, _render_choice(profile, "rocm", None, gpu, env, reason)
    )


def _cuda(profile: HardwareProfile, gpu: Gpu, _: bool) -> Support:
    if gpu.kernel_driver != "nvidia":
        return _not_for("cuda", gpu, "not on NVIDIA's driver")
    return _nvidia(profile, gpu, "cuda")


def _oneapi(profile: HardwareProfile, gpu: Gpu, _: bool) -> Support:
    if gpu.kernel_driver not in ("i915", "xe"):
        return _not_for("oneapi", gpu, "not an Intel GPU on i915/xe")
    bad = _missing_node(profile, gpu)
    if bad:
        return Support("oneapi", None, gpu, bad)
    env = {"ONEAPI_DEVICE_SELECTOR": "level_zero:0"}
    reason = f"{gpu.kernel_driver} → Level Zero on {gpu.render_node}"
    return Support(
        "oneapi", None, gpu, reason, _render_choice(profile, "oneapi", None, gpu, env, reason)
    )


def _nvidia(profile: HardwareProfile, gpu: Gpu, backend: str) -> Support:
    driver = "nvidia" if backend == "vulkan" else None
    nth = [g.index for g in profile.gpus if g.kernel_driver == "nvidia"].index(gpu.index)
    names = profile.cdi_devices()
    if not names:
        return Support(backend, driver, gpu, f"NVIDIA driver but no CDI spec: {NO_CDI_FIX}")
    name = f"nvidia.com/gpu={nth}"
    if name not in names:
        single = (
            "nvidia.com/gpu=all" in names
            and nth == 0
            and not any(g.kernel_driver == "nvidia" for g in profile.gpus if g.index != gpu.index)
        )
        if not single:
            return Support(backend, driver, gpu, f"CDI spec has no {name}: {NO_CDI_FIX}")
        name = "nvidia.com/gpu=all"
    spec = next(s for s in profile.cdi_specs if name in s.devices)
    env = {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}
    reason = f"NVIDIA driver via CDI device {name}"
    if backend == "vulkan":
        if not spec.injects_vulkan or spec.vulkan_icd is None:
            # Offered only when complete: a half-injected driver fails inside the container
            # with a loader error far from its cause ("Could not get 'vkCreateInstance'").
            return Support(backend, driver, gpu, f"{spec.vulkan_gap()}: {GRAPHICS_FIX}")
        env = {
            "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,graphics",
            "VK_DRIVER_FILES": spec.vulkan_icd,
            "GGML_VK_VISIBLE_DEVICES": "0",
        }
        reason = f"NVIDIA's Vulkan driver via CDI device {name}"
    return Support(
        backend, driver, gpu, reason, Choice(backend, driver, gpu, (name,), (), env, reason)
    )


def missing(profile: HardwareProfile, backend: str) -> str:
    """What a backend lacks on a host where no GPU is of its kind."""
    if backend == "rocm":
        return "no AMD GPU" + ("" if profile.kfd else ", no /dev/kfd")
    if backend == "cuda":
        return "no GPU on NVIDIA's driver" + ("" if profile.cdi_devices() else ", no CDI spec")
    if backend == "oneapi":
        return "no Intel GPU (the SYCL CPU device still works)"
    return "no GPU with a Vulkan driver (lavapipe still works)"


def _not_for(backend: str, gpu: Gpu, why: str) -> Support:
    driver = gpu.kernel_driver or "no driver"
    return Support(backend, None, gpu, f"{why} ({gpu.vendor} on {driver})", applies=False)


def _missing_node(profile: HardwareProfile, gpu: Gpu) -> str | None:
    if gpu.render_node is None:
        return "no render node (/dev/dri/renderD*)"
    if profile.node(gpu.render_node) is None:
        return f"{gpu.render_node} is missing (not shared into this environment?)"
    return None


def _render_choice(
    profile: HardwareProfile,
    backend: str,
    driver: str | None,
    gpu: Gpu,
    env: dict[str, str],
    reason: str,
) -> Choice:
    """Pass only this GPU's render node (+ /dev/kfd for rocm) and the groups that own them."""
    assert gpu.render_node is not None
    devices = (gpu.render_node, *(["/dev/kfd"] if backend == "rocm" and profile.kfd else []))
    gids: list[str] = []
    for path in devices:
        node = profile.node(path)
        # Group 0 grants nothing a non-root container user should have.
        if node and node.gid != 0 and str(node.gid) not in gids:
            gids.append(str(node.gid))
    return Choice(backend, driver, gpu, devices, tuple(gids), env, reason)
