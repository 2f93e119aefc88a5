"""The compatibility table, `choose()` and the exact passthrough each host gets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakesys import (
    FakeHost,
    amd_dgpu_with_kfd,
    intel_nvidia_laptop,
    no_gpu,
    nvidia_cdi_spec,
    two_amd_gpus,
    virtio_gpu,
)

from vkrama.backends import choose, hsa_override_for, support, usable
from vkrama.engine.spec import ContainerSpec
from vkrama.errors import ExitStatus, VkramaError
from vkrama.hardware.cdi import GRAPHICS_FIX

LVP = "/usr/share/vulkan/icd.d/lvp_icd.json"
RADV = "/usr/share/vulkan/icd.d/radeon_icd.json"
ANV = "/usr/share/vulkan/icd.d/intel_icd.json"
NV_ICD = "/usr/share/vulkan/icd.d/nvidia_icd.json"
R = "RENDER_GID"  # placeholder for the render group's gid in the fake tree


def laptop_without_cdi(host: FakeHost) -> None:
    intel_nvidia_laptop(host, cdi=False)


def laptop_with_compute_only_cdi(host: FakeHost) -> None:
    intel_nvidia_laptop(host, graphics=False)


def laptop_with_cdi_without_egl_vendor(host: FakeHost) -> None:
    """The ICD json and libGLX_nvidia only: what made the H100's vulkan cell fail."""
    intel_nvidia_laptop(host, cdi=False)
    host.add_cdi_spec(nvidia_cdi_spec(without=("10_nvidia.json",)))


def profile_of(tmp_path: Path, build: Callable[[FakeHost], None]) -> tuple[FakeHost, Any]:
    host = FakeHost(tmp_path)
    build(host)
    return host, host.detect()


# Usable on every host: the CPU, and the software devices of Vulkan and SYCL.
NO_GPU_CELLS = [("cpu", None), ("vulkan/lavapipe", None), ("oneapi/opencl-cpu", None)]
# Each host: every usable cell as (cell, gpu index), and the reason of each unusable cell.
TABLES = [
    ("one-amd-dgpu-with-kfd-offers-radv-and-rocm", amd_dgpu_with_kfd,
     [*NO_GPU_CELLS, ("vulkan/radv", 0), ("rocm", 0)],
     {("cuda", 0): "not on NVIDIA's driver (AMD on amdgpu)",
      ("oneapi", 0): "not an Intel GPU on i915/xe (AMD on amdgpu)"}),
    ("laptop-with-cdi-offers-anv-oneapi-and-nvidia-vulkan-and-cuda", intel_nvidia_laptop,
     [*NO_GPU_CELLS, ("vulkan/anv", 0), ("oneapi", 0),
      ("vulkan/nvidia", 1), ("cuda", 1)],
     {("rocm", 0): "not an AMD GPU on amdgpu (Intel on i915)",
      ("rocm", 1): "not an AMD GPU on amdgpu (NVIDIA on nvidia)"}),
    ("laptop-without-cdi-offers-only-the-intel-gpu-and-says-how-to-get-cdi", laptop_without_cdi,
     [*NO_GPU_CELLS, ("vulkan/anv", 0), ("oneapi", 0)],
     {("vulkan/nvidia", 1): "NVIDIA driver but no CDI spec: "
      "run `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`",
      ("cuda", 1): "NVIDIA driver but no CDI spec: "
      "run `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"}),
    ("laptop-with-compute-only-cdi-offers-cuda-but-not-nvidia-vulkan",
     laptop_with_compute_only_cdi,
     [*NO_GPU_CELLS, ("vulkan/anv", 0), ("oneapi", 0), ("cuda", 1)],
     {("vulkan/nvidia", 1): "CDI spec {cdi}/nvidia.yaml does not inject nvidia_icd.json, "
      "10_nvidia.json, libGLX_nvidia.so*, libEGL_nvidia.so*, libnvidia-eglcore.so*, "
      "libnvidia-glvkspirv.so* (NVIDIA's Vulkan driver needs them): "
      + GRAPHICS_FIX}),
    ("laptop-whose-cdi-lacks-the-egl-vendor-json-offers-cuda-but-not-nvidia-vulkan",
     laptop_with_cdi_without_egl_vendor,
     [*NO_GPU_CELLS, ("vulkan/anv", 0), ("oneapi", 0), ("cuda", 1)],
     {("vulkan/nvidia", 1): "CDI spec {cdi}/nvidia.yaml does not inject 10_nvidia.json "
      "(NVIDIA's Vulkan driver needs them): " + GRAPHICS_FIX}),
    ("two-amd-gpus-offer-radv-and-rocm-on-each", two_amd_gpus,
     [*NO_GPU_CELLS, ("vulkan/radv", 0), ("rocm", 0),
      ("vulkan/radv", 1), ("rocm", 1)], {}),
    ("virtio-gpu-offers-only-cpu-lavapipe-and-the-sycl-cpu-device", virtio_gpu,
     NO_GPU_CELLS,
     {("vulkan", 0): "no Vulkan driver (virtio on virtio_gpu)"}),
    ("no-gpu-offers-cpu-lavapipe-and-the-sycl-cpu-device-and-names-what-each-other-lacks", no_gpu,
     NO_GPU_CELLS,
     {("vulkan", None): "no GPU with a Vulkan driver (lavapipe still works)",
      ("rocm", None): "no AMD GPU, no /dev/kfd",
      ("cuda", None): "no GPU on NVIDIA's driver, no CDI spec",
      ("oneapi", None): "no Intel GPU (the SYCL CPU device still works)"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "offered", "reasons"),
    [row[1:] for row in TABLES],
    ids=[row[0] for row in TABLES],
)
def test_each_host_offers_these_backends_with_these_reasons(
    tmp_path: Path,
    build: Callable[[FakeHost], None],
    offered: list[tuple[str, int | None]],
    reasons: dict[tuple[str, int | None], str],
) -> None:
    host, profile = profile_of(tmp_path, build)
    got = [(c.cell, c.gpu.index if c.gpu else None) for c in usable(profile)]
    assert got == offered
    cells = {(c.choice.cell if c.choice else f"{c.backend}/{c.driver}" if c.driver else c.backend,
              c.gpu.index if c.gpu else None): c for c in support(profile)}  # fmt: skip
    for key, reason in reasons.items():
        assert not cells[key].ok
        assert cells[key].reason == reason.format(cdi=host.cdi)
    assert all(c.reason for c in cells.values())


# (host, choose() arguments) -> (cell, gpu, devices, group_add, env, reason start)
PASSTHROUGH = [
    ("amd-auto-picks-radv-with-only-its-render-node-and-group", amd_dgpu_with_kfd, {},
     ("vulkan/radv", 0, ("/dev/dri/renderD128",), (R,),
      {"VK_DRIVER_FILES": RADV, "GGML_VK_VISIBLE_DEVICES": "0"},
      "auto: amdgpu → Mesa RADV on /dev/dri/renderD128; RADV needs only the render node")),
    ("amd-rocm-adds-kfd-and-hip-visible-devices", amd_dgpu_with_kfd, {"backend": "rocm"},
     ("rocm", 0, ("/dev/dri/renderD128", "/dev/kfd"), (R,), {"HIP_VISIBLE_DEVICES": "0"},
      "amdgpu, /dev/kfd and gfx1100, which Debian's HIP build supports")),
    ("two-amd-gpus-gpu-1-passes-only-its-render-node", two_amd_gpus,
     {"backend": "vulkan", "gpu": 1},
     ("vulkan/radv", 1, ("/dev/dri/renderD129",), (R,),
      {"VK_DRIVER_FILES": RADV, "GGML_VK_VISIBLE_DEVICES": "0"},
      "amdgpu → Mesa RADV on /dev/dri/renderD129")),
    ("two-amd-gpus-rocm-gpu-0-passes-its-render-node-and-kfd", two_amd_gpus,
     {"backend": "rocm", "gpu": 0},
     ("rocm", 0, ("/dev/dri/renderD128", "/dev/kfd"), (R,), {"HIP_VISIBLE_DEVICES": "0"},
      "amdgpu, /dev/kfd and gfx1030")),
    ("two-amd-gpus-auto-prefers-the-one-with-more-vram", two_amd_gpus, {},
     ("vulkan/radv", 1, ("/dev/dri/renderD129",), (R,),
      {"VK_DRIVER_FILES": RADV, "GGML_VK_VISIBLE_DEVICES": "0"}, "auto: amdgpu")),
    ("laptop-auto-picks-cuda-on-the-nvidia-gpu-through-cdi", intel_nvidia_laptop, {},
     ("cuda", 1, ("nvidia.com/gpu=0",), (), {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"},
      "auto: NVIDIA driver via CDI device nvidia.com/gpu=0; CUDA is")),
    ("laptop-nvidia-vulkan-injects-the-icd-and-graphics-capability", intel_nvidia_laptop,
     {"vk_driver": "nvidia"},
     ("vulkan/nvidia", 1, ("nvidia.com/gpu=0",), (),
      {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility,graphics", "VK_DRIVER_FILES": NV_ICD,
       "GGML_VK_VISIBLE_DEVICES": "0"}, "NVIDIA's Vulkan driver via CDI device nvidia.com/gpu=0")),
    ("laptop-anv-on-the-igpu", intel_nvidia_laptop, {"vk_driver": "anv"},
     ("vulkan/anv", 0, ("/dev/dri/renderD128",), (R,),
      {"VK_DRIVER_FILES": ANV, "GGML_VK_VISIBLE_DEVICES": "0"}, "i915 → Mesa ANV")),
    ("laptop-oneapi-selects-level-zero-device-0", intel_nvidia_laptop, {"backend": "oneapi"},
     ("oneapi", 0, ("/dev/dri/renderD128",), (R,), {"ONEAPI_DEVICE_SELECTOR": "level_zero:0"},
      "i915 → Level Zero on /dev/dri/renderD128")),
    ("laptop-without-cdi-auto-falls-back-to-the-intel-igpu", laptop_without_cdi, {},
     ("vulkan/anv", 0, ("/dev/dri/renderD128",), (R,),
      {"VK_DRIVER_FILES": ANV, "GGML_VK_VISIBLE_DEVICES": "0"}, "auto: i915 → Mesa ANV")),
    ("virtio-auto-is-cpu-and-says-why", virtio_gpu, {},
     ("cpu", None, (), (), {},
      "auto: no usable GPU (GPU 0: no GPU stack for virtio_gpu); cpu is faster than lavapipe")),
    ("no-gpu-auto-is-cpu", no_gpu, {},
     ("cpu", None, (), (), {}, "auto: no GPU found; cpu is faster than lavapipe")),
    ("no-gpu-lavapipe-passes-no-device-and-names-llvmpipe-for-ggml", no_gpu,
     {"vk_driver": "lavapipe"},
     ("vulkan/lavapipe", None, (), (), {"VK_DRIVER_FILES": LVP, "GGML_VK_VISIBLE_DEVICES": "0"},
      "Mesa's software Vulkan (llvmpipe)")),
    ("no-gpu-vulkan-means-lavapipe-and-says-so", no_gpu, {"backend": "vulkan"},
     ("vulkan/lavapipe", None, (), (), {"VK_DRIVER_FILES": LVP, "GGML_VK_VISIBLE_DEVICES": "0"},
      "no GPU here: Mesa's software Vulkan")),
    ("amd-host-lavapipe-still-passes-no-gpu", amd_dgpu_with_kfd, {"vk_driver": "lavapipe"},
     ("vulkan/lavapipe", None, (), (), {"VK_DRIVER_FILES": LVP, "GGML_VK_VISIBLE_DEVICES": "0"},
      "Mesa's software Vulkan")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "args", "expected"),
    [row[1:] for row in PASSTHROUGH],
    ids=[row[0] for row in PASSTHROUGH],
)
def test_choose_passes_exactly_this_through(
    tmp_path: Path,
    build: Callable[[FakeHost], None],
    args: dict[str, Any],
    expected: tuple[Any, ...],
) -> None:
    host, profile = profile_of(tmp_path, build)
    cell, gpu, devices, groups, env, reason = expected
    groups = tuple(str(host.render_gid) if g == R else g for g in groups)
    choice = choose(profile, **args)
    assert (choice.cell, choice.gpu.index if choice.gpu else None) == (cell, gpu)
    assert (choice.devices, choice.group_add, choice.env) == (devices, groups, env)
    assert choice.reason.startswith(reason), choice.reason

    spec = ContainerSpec(
        image="localhost/vkrama/vulkan:latest",
        devices=choice.devices,
        group_add=choice.group_add,
        env=choice.env,
    )
    argv = spec.podman_argv()
    passed = [argv[i + 1] for i, word in enumerate(argv) if word == "--device"]
    assert passed == list(devices)
    assert [argv[i + 1] for i, word in enumerate(argv) if word == "--group-add"] == list(groups)
    assert [argv[i + 1] for i, w in enumerate(argv) if w == "--env"] == [
        f"{k}={v}" for k, v in sorted(env.items())
    ]
    assert not any(d == "/dev/dri" for d in passed)  # never all of /dev/dri


ERRORS = [
    ("no-gpu-rocm-names-what-is-missing", no_gpu, {"backend": "rocm"},
     ExitStatus.BACKEND_UNAVAILABLE, "rocm is unavailable here: no AMD GPU, no /dev/kfd"),
    ("laptop-rocm-names-what-is-missing", intel_nvidia_laptop, {"backend": "rocm"},
     ExitStatus.BACKEND_UNAVAILABLE, "rocm is unavailable here: no AMD GPU, no /dev/kfd"),
    ("no-gpu-cuda-names-what-is-missing", no_gpu, {"backend": "cuda"},
     ExitStatus.BACKEND_UNAVAILABLE,
     "cuda is unavailable here: no GPU on NVIDIA's driver, no CDI spec"),
    ("laptop-without-cdi-cuda-says-how-to-make-the-spec", laptop_without_cdi, {"backend": "cuda"},
     ExitStatus.BACKEND_UNAVAILABLE, "cuda is unavailable here: GPU 1: NVIDIA driver but no CDI "
     "spec: run `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"),
    ("virtio-vulkan-is-refused-not-silently-lavapipe", virtio_gpu, {"backend": "vulkan"},
     ExitStatus.BACKEND_UNAVAILABLE,
     "vulkan is unavailable here: no GPU with a Vulkan driver (lavapipe still works)"),
    ("radv-asked-on-a-laptop-without-amd", intel_nvidia_laptop, {"vk_driver": "radv"},
     ExitStatus.BACKEND_UNAVAILABLE, "vulkan is unavailable here: no GPU on amdgpu for radv"),
    ("gpu-index-out-of-range", two_amd_gpus, {"gpu": 2},
     ExitStatus.BACKEND_UNAVAILABLE, "no GPU 2: this host has 2 GPUs (0-1)"),
    ("gpu-with-cpu-is-a-usage-error", two_amd_gpus, {"backend": "cpu", "gpu": 1},
     ExitStatus.USAGE, "--gpu does not apply to cpu, which runs on the CPU"),
    ("vk-driver-with-rocm-is-a-usage-error", two_amd_gpus, {"backend": "rocm", "vk_driver": "radv"},
     ExitStatus.USAGE, "--vk-driver applies to the vulkan backend, not rocm"),
    ("unknown-backend-is-a-usage-error", no_gpu, {"backend": "metal"},
     ExitStatus.USAGE, "unknown backend 'metal'"),
    ("virtio-auto-on-that-gpu-says-nothing-can-use-it", virtio_gpu, {"gpu": 0},
     ExitStatus.BACKEND_UNAVAILABLE, "nothing can use GPU 0: GPU 0: no GPU stack for virtio_gpu"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "args", "status", "message"),
    [row[1:] for row in ERRORS],
    ids=[row[0] for row in ERRORS],
)
def test_choose_refuses_with_one_line_and_a_specific_status(
    tmp_path: Path,
    build: Callable[[FakeHost], None],
    args: dict[str, Any],
    status: ExitStatus,
    message: str,
) -> None:
    _, profile = profile_of(tmp_path, build)
    with pytest.raises(VkramaError) as caught:
        choose(profile, **args)
    assert (caught.value.status, caught.value.message) == (status, message)
    assert "\n" not in caught.value.message


def test_rocm_on_an_unsupported_target_needs_the_override_asked_for(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    # A Radeon 780M iGPU: gfx1103, not in Debian's HIP build.
    host.add_gpu("0000:c4:00.0", "1002", "15bf", "amdgpu", render_minor=128, card=0,
                 vram=512 * 1024**2, gfx_target_version=110003)  # fmt: skip
    host.add_kfd()
    profile = host.detect()
    with pytest.raises(VkramaError) as caught:
        choose(profile, backend="rocm")
    assert caught.value.message == (
        "rocm is unavailable here: GPU 0: gfx1103 is not in Debian's HIP build; "
        "HSA_OVERRIDE_GFX_VERSION=11.0.0 may work (ask with --hsa-override)"
    )
    choice = choose(profile, backend="rocm", hsa_override=True)
    assert choice.env == {"HIP_VISIBLE_DEVICES": "0", "HSA_OVERRIDE_GFX_VERSION": "11.0.0"}
    assert choice.reason == "gfx1103 run as 11.0.0 via HSA_OVERRIDE_GFX_VERSION (asked for)"
    # auto never sets the override by itself
    assert choose(profile).cell == "vulkan/radv"


@pytest.mark.parametrize(
    ("target", "override"),
    [("gfx1031", "10.3.0"), ("gfx1103", "11.0.0"), ("gfx1151", "11.0.0"), ("gfx902", "9.0.0"),
     ("gfx942", None), ("gfx1201", None), ("gfx1100", "11.0.0")],
    ids=lambda v: str(v),
)  # fmt: skip
def test_hsa_override_maps_a_target_to_its_nearest_supported_one(
    target: str, override: str | None
) -> None:
    assert hsa_override_for(target) == override


@pytest.mark.parametrize(
    ("args", "label"),
    [({}, "AMD Navi 31 [Radeon RX 7900 XT/7900 XTX/7900 GRE/7900M]"),
     ({"vk_driver": "lavapipe"}, "llvmpipe (lavapipe)"), ({"backend": "cpu"}, "CPU")],
    ids=["gpu-choice-is-labelled-by-the-gpu-name", "lavapipe-is-llvmpipe", "cpu-is-cpu"],
)  # fmt: skip
def test_device_label_is_short_human_text(tmp_path: Path, args: dict[str, Any], label: str) -> None:
    _, profile = profile_of(tmp_path, amd_dgpu_with_kfd)
    assert choose(profile, **args).device_label == label
