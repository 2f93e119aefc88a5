"""What reaches the container on each kind of host, as `serve --dry-run` and `bench --dry-run`
print it: exactly the chosen GPU's nodes, its groups by gid, and the environment that pins the
stack to it. Detection reads fake /sys and /dev trees laid out as real kernels lay them out."""

from __future__ import annotations

import itertools
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakesys import (
    FakeHost,
    amd_dgpu_with_kfd,
    intel_nvidia_laptop,
    no_gpu,
    two_amd_gpus,
    virtio_gpu,
)
from test_devices_cli import roots

from vkrama.errors import ExitStatus

LVP = "/usr/share/vulkan/icd.d/lvp_icd.json"
RADV = "/usr/share/vulkan/icd.d/radeon_icd.json"

# (host, flags, devices, groups (names resolved per host), env)
CASES = {
    "amd-dgpu-with-kfd-rocm-gets-its-render-node-and-kfd": (
        amd_dgpu_with_kfd, ["--backend", "rocm"],
        ["/dev/dri/renderD128", "/dev/kfd"], ["render"], {"HIP_VISIBLE_DEVICES": "0"},
    ),
    "amd-dgpu-vulkan-radv-gets-only-the-render-node": (
        amd_dgpu_with_kfd, ["--backend", "vulkan", "--vk-driver", "radv"],
        ["/dev/dri/renderD128"], ["render"],
        {"GGML_VK_VISIBLE_DEVICES": "0", "VK_DRIVER_FILES": RADV},
    ),
    "second-of-two-amd-gpus-passes-only-its-render-node": (
        two_amd_gpus, ["--backend", "vulkan", "--gpu", "1"],
        ["/dev/dri/renderD129"], ["render"],
        {"GGML_VK_VISIBLE_DEVICES": "0", "VK_DRIVER_FILES": RADV},
    ),
    "laptop-with-cdi-cuda-gets-the-cdi-device-name": (
        intel_nvidia_laptop, ["--backend", "cuda"],
        ["nvidia.com/gpu=0"], [], {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"},
    ),
    "no-gpu-lavapipe-gets-no-device-and-the-software-icd": (
        no_gpu, ["--backend", "vulkan", "--vk-driver", "lavapipe"],
        [], [], {"GGML_VK_VISIBLE_DEVICES": "0", "VK_DRIVER_FILES": LVP},
    ),
    "virtio-gpu-cpu-passes-no-device": (virtio_gpu, ["--backend", "cpu"], [], [], {}),
    # An Intel GPU: its render node and Level Zero, and none of the CPU device's shim.
    "intel-laptop-oneapi-gets-its-render-node-and-level-zero-without-the-shim": (
        intel_nvidia_laptop, ["--backend", "oneapi"],
        ["/dev/dri/renderD128"], ["render"], {"ONEAPI_DEVICE_SELECTOR": "level_zero:0"},
    ),
    "no-gpu-oneapi-runs-on-the-sycl-cpu-device-with-its-shim-and-no-device": (
        no_gpu, ["--backend", "oneapi"], [], [],
        {"ONEAPI_DEVICE_SELECTOR": "opencl:cpu",
         "LD_PRELOAD": "/opt/oneapi/cpu-device/libsycl-cpu-device.so",
         "SYCL_PROGRAM_COMPILE_OPTIONS": "", "GGML_SYCL_ENABLE_FLASH_ATTN": "0"},
    ),
}  # fmt: skip


def parse(argv: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """Devices, groups and env of one `podman run` line."""
    devices, groups, env = [], [], {}
    for flag, value in itertools.pairwise(argv):
        if flag == "--device":
            devices.append(value)
        elif flag == "--group-add":
            groups.append(value)
        elif flag == "--env":
            key, _, val = value.partition("=")
            env[key] = val
    return devices, groups, env


@pytest.mark.parametrize("command", ["serve", "bench"])
@pytest.mark.parametrize("case", list(CASES))
def test_dry_run_passes_exactly_this_through(
    case: str, command: str, tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    build, flags, devices, group_names, env = CASES[case]
    host = FakeHost(tmp_path)
    build(host)
    done = vkrama("--dry-run", command, str(tiny_model), *flags, env=roots(host))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("podman run ")]
    assert len(lines) == 1
    seen_devices, seen_groups, seen_env = parse(shlex.split(lines[0]))
    assert seen_devices == devices
    assert seen_groups == [str(host.render_gid) for _ in group_names]
    pinning = {
        k: v
        for k, v in seen_env.items()
        if re.match(r"GGML_|VK_|HIP_|NVIDIA_|ONEAPI_|SYCL_|LD_", k)
    }
    assert pinning == env
    assert "/dev/dri " not in lines[0] and "--privileged" not in lines[0]


@pytest.mark.parametrize("command", ["serve", "bench"])
def test_rocm_without_an_amd_gpu_is_refused_before_anything_runs(
    command: str, tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    intel_nvidia_laptop(host)
    done = vkrama("--dry-run", command, str(tiny_model), "--backend", "rocm", env=roots(host))
    assert done.returncode == ExitStatus.BACKEND_UNAVAILABLE
    first, hint = done.stderr.splitlines()
    assert first.startswith("Error: ")
    assert first.endswith("rocm is unavailable here: no AMD GPU, no /dev/kfd")
    assert hint.startswith("Hint: ")


@pytest.mark.parametrize(
    ("build", "said"),
    [
        (no_gpu, "backend cpu: auto: no GPU found; cpu is faster than lavapipe"),
        (two_amd_gpus, "backend vulkan (radv): "),
    ],
    ids=["no-gpu-auto-says-why-cpu", "amd-auto-says-why-radv"],
)
def test_serve_auto_says_which_backend_it_chose_and_why(
    build: Callable[[FakeHost], None],
    said: str,
    tmp_path: Path,
    tiny_model: Path,
    vkrama: Callable[..., Any],
) -> None:
    host = FakeHost(tmp_path)
    build(host)
    done = vkrama("--dry-run", "serve", str(tiny_model), env=roots(host))
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(said)


def test_a_dry_run_bench_names_each_asked_for_cell_it_cannot_run_and_why(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    intel_nvidia_laptop(host)
    done = vkrama("--dry-run", "bench", str(tiny_model), "--backend", "cpu,rocm", env=roots(host))
    assert done.returncode == ExitStatus.OK, done.stderr
    assert done.stdout.startswith("podman run ") and "localhost/vkrama/cpu" in done.stdout
    assert done.stderr.splitlines()[-1] == "# rocm: unavailable: no AMD GPU, no /dev/kfd"


@pytest.mark.parametrize("command", ["serve", "bench"])
def test_vulkan_on_nvidia_keeps_its_pipelines_in_vkramas_cache(
    command: str, tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    """NVIDIA's driver caches Vulkan pipelines in its own folder, not Mesa's: without a mount
    every vulkan/nvidia container started cold (issue 26: a first repetition at a third)."""
    host = FakeHost(tmp_path)
    intel_nvidia_laptop(host)
    flags = ["--backend", "vulkan", "--vk-driver", "nvidia"]
    done = vkrama("--dry-run", command, str(tiny_model), *flags, env=roots(host))
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("podman run ")]
    argv = shlex.split(line)
    home = Path(os.environ["VKRAMA_HOME"])
    mount = f"type=bind,src={home / 'cache' / 'nvidia'},dst=/cache/nvidia"
    assert mount in [value for flag, value in itertools.pairwise(argv) if flag == "--mount"]
    env = parse(argv)[2]
    assert env["__GL_SHADER_DISK_CACHE_PATH"] == "/cache/nvidia"
    assert env["__GL_SHADER_DISK_CACHE_SKIP_CLEANUP"] == "1"
    assert "MESA_SHADER_CACHE_DIR" not in env
