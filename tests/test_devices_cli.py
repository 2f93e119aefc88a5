"""`vkrama devices` and `vkrama doctor`: transcripts on fake trees, checks on given facts,
and lavapipe's passthrough proved in the real vulkan image."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakesys import (
    FakeHost,
    amd_dgpu_with_kfd,
    intel_nvidia_laptop,
    nvidia_cdi_spec,
    two_amd_gpus,
)

from vkrama import doctor
from vkrama.backends import choose
from vkrama.engine import ContainerSpec, Engine
from vkrama.engine.records import EngineInfo
from vkrama.errors import ExitStatus
from vkrama.hardware import detect
from vkrama.hardware.cdi import GRAPHICS_FIX

NO_GPU_TRANSCRIPT = """\
No GPU found: vkrama runs on the CPU here, or Vulkan (lavapipe) and SYCL (Intel's OpenCL CPU device) in software.

CDI devices: none   /dev/kfd: absent

Backend    Driver      GPU    Usable    Why
---------  ----------  -----  --------  --------------------------------------------------------------------------------
cpu        -           -      yes       always available: ggml's CPU backend
vulkan     lavapipe    -      yes       Mesa's software Vulkan (llvmpipe): needs no GPU; slower than cpu
oneapi     opencl-cpu  -      yes       SYCL on Intel's OpenCL CPU runtime: needs no GPU; a test device, slower than cpu
vulkan     -           -      no        no GPU with a Vulkan driver (lavapipe still works)
rocm       -           -      no        no AMD GPU, no /dev/kfd
cuda       -           -      no        no GPU on NVIDIA's driver, no CDI spec
oneapi     -           -      no        no Intel GPU (the SYCL CPU device still works)

Chosen (auto): cpu on CPU: auto: no GPU found; cpu is faster than lavapipe
Passes: no device, no environment
"""  # noqa: E501 (a table is as wide as it is)


def roots(host: FakeHost) -> dict[str, str]:
    """The settings that point vkrama's detection at a fake host."""
    return {
        "VKRAMA_HARDWARE_SYSFS_ROOT": str(host.sysfs),
        "VKRAMA_HARDWARE_DEV_ROOT": str(host.dev),
        "VKRAMA_HARDWARE_CDI_DIRS": str(host.cdi),
        "VKRAMA_HARDWARE_PCI_IDS": str(host.pci_ids),
    }


def test_no_gpu_says_so_plainly_and_offers_cpu_and_lavapipe(
    tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    done = vkrama("devices", env=roots(FakeHost(tmp_path)))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == NO_GPU_TRANSCRIPT


def test_rocm_without_amd_gpu_is_one_line_naming_what_is_missing(
    tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    done = vkrama("devices", "--backend", "rocm", env=roots(FakeHost(tmp_path)))
    assert done.returncode == ExitStatus.BACKEND_UNAVAILABLE
    assert ExitStatus.BACKEND_UNAVAILABLE.value == 8
    assert done.stdout == ""
    assert done.stderr == (
        "Error: rocm is unavailable here: no AMD GPU, no /dev/kfd\n"
        "Hint: `vkrama devices` shows what works here; cpu and --vk-driver lavapipe need no GPU\n"
    )


def test_json_of_an_amd_host_carries_gpus_cells_and_the_chosen_passthrough(
    tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    amd_dgpu_with_kfd(host)
    done = vkrama("devices", "--json", "--backend", "rocm", env=roots(host))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [(g["ids"], g["kernel_driver"], g["gfx_target"]) for g in data["gpus"]] == [
        ("1002:744c", "amdgpu", "gfx1100")
    ]
    assert data["gpu_key"] == "1002:744c"
    assert data["choice"] == {
        "backend": "rocm",
        "driver": None,
        "gpu": 0,
        "gpus": [0],
        "device_label": "AMD Navi 31 [Radeon RX 7900 XT/7900 XTX/7900 GRE/7900M]",
        "devices": ["/dev/dri/renderD128", "/dev/kfd"],
        "group_add": [str(host.render_gid)],
        "env": {"HIP_VISIBLE_DEVICES": "0"},
        "reason": "amdgpu, /dev/kfd and gfx1100, which Debian's HIP build supports",
    }
    usable = [(c["backend"], c["driver"], c["gpu"]) for c in data["backends"] if c["usable"]]
    assert usable == [("cpu", None, None), ("vulkan", "lavapipe", None),
                      ("oneapi", "opencl-cpu", None), ("vulkan", "radv", 0),
                      ("rocm", None, 0)]  # fmt: skip


def test_gpu_1_of_two_passes_only_its_render_node(
    tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    two_amd_gpus(host)
    done = vkrama("devices", "--gpu", "1", "--vk-driver", "radv", env=roots(host))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-2] == (
        "Chosen (auto): vulkan/radv on AMD Navi 31 [Radeon RX 7900 XT/7900 XTX/7900 GRE/7900M]: "
        "amdgpu → Mesa RADV on /dev/dri/renderD129"
    )
    assert lines[-1] == (
        f"Passes: --device /dev/dri/renderD129 --group-add {host.render_gid} "
        "--env GGML_VK_VISIBLE_DEVICES=0 "
        "--env VK_DRIVER_FILES=/usr/share/vulkan/icd.d/radeon_icd.json"
    )


def test_laptop_without_cdi_tells_how_to_make_the_spec(
    tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    intel_nvidia_laptop(host, cdi=False)
    done = vkrama("devices", env=roots(host))
    assert done.returncode == 0, done.stderr
    assert (
        "cuda       -           1      no        NVIDIA driver but no CDI spec: "
        "run `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
    ) in done.stdout.splitlines()
    assert "Chosen (auto): vulkan/anv on Intel Raptor Lake-P [Iris Xe Graphics]" in done.stdout


def test_laptop_whose_cdi_lacks_the_egl_vendor_json_names_it_and_the_fix(
    tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    intel_nvidia_laptop(host, cdi=False)
    host.add_cdi_spec(nvidia_cdi_spec(without=("10_nvidia.json", "libnvidia-glvkspirv")))
    done = vkrama("devices", env=roots(host))
    assert done.returncode == 0, done.stderr
    rows = [line.split()[:4] for line in done.stdout.splitlines()]
    assert ["vulkan", "nvidia", "1", "no"] in rows
    assert ["cuda", "-", "1", "yes"] in rows
    assert (
        f"CDI spec {host.cdi}/nvidia.yaml does not inject 10_nvidia.json, "
        "libnvidia-glvkspirv.so* (NVIDIA's Vulkan driver needs them): " + GRAPHICS_FIX
    ) in " ".join(done.stdout.split())
    asked = vkrama("devices", "--vk-driver", "nvidia", env=roots(host))
    assert asked.returncode == ExitStatus.BACKEND_UNAVAILABLE
    assert "does not inject 10_nvidia.json" in asked.stderr and "nvidia-ctk cdi generate" in (
        asked.stderr
    )


# -- doctor ------------------------------------------------------------------------------------

PODMAN = EngineInfo("4.3.1", "4.3.1", "unix:///run/podman/podman.sock", "system socket",
                    False, "runc", "overlay", False)  # fmt: skip
LIMITS = {"nofile": 20000, "nproc": 4096}


def checks_of(host: FakeHost, **facts: Any) -> dict[str, doctor.Check]:
    base = {"engine": PODMAN, "hard_limits": LIMITS, "default_ulimits": ("nofile=4096:4096",)}
    found = doctor.diagnose(host.detect(), doctor.Facts(**{**base, **facts}))
    return {check.name: check for check in found}


DOCTOR = [
    ("podman-unreachable-fails-with-a-fix", None,
     {"engine": None, "engine_error": "cannot reach podman"},
     "podman", doctor.Check("podman", "fail", "cannot reach podman",
                            "install podman, or point --engine-url at its API socket")),
    ("crun-on-hybrid-cgroups-fails-and-says-use-runc", None,
     {"engine": EngineInfo(**{**PODMAN.__dict__, "oci_runtime": "crun"}), "cgroup_hybrid": True},
     "OCI runtime", doctor.Check("OCI runtime", "fail",
                                 "crun refuses cgroups in hybrid mode (v1 + unified)",
                                 'install runc and set runtime = "runc" under [engine] in '
                                 "containers.conf")),
    ("low-hard-nofile-without-default-ulimits-warns", None, {"default_ulimits": ()},
     "ulimits", doctor.Check("ulimits", "warn", "nofile hard 20000, nproc hard 4096: below "
                             "podman's default ask, so `podman build` RUN steps fail with "
                             "setrlimit", doctor.ULIMITS_FIX)),
    ("nvidia-gpu-without-cdi-fails-with-nvidia-ctk", lambda h: intel_nvidia_laptop(h, cdi=False),
     {}, "CDI", doctor.Check("CDI", "fail", "NVIDIA GPU but no nvidia.com/gpu CDI spec",
                             "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml")),
    ("nvidia-cdi-without-the-egl-path-warns-naming-the-missing-files",
     lambda h: (intel_nvidia_laptop(h, cdi=False),  # type: ignore[func-returns-value]
                h.add_cdi_spec(nvidia_cdi_spec(without=("10_nvidia.json", "libEGL_nvidia")))),
     {}, "CDI", doctor.Check(
         "CDI", "warn", "nvidia.com/gpu=0, nvidia.com/gpu=GPU-8d2c0f2e, nvidia.com/gpu=all; "
         "CDI spec {cdi}/nvidia.yaml does not inject 10_nvidia.json, libEGL_nvidia.so* "
         "(NVIDIA's Vulkan driver needs them), so NVIDIA Vulkan cannot run (CUDA can)",
         GRAPHICS_FIX)),
    ("nvidia-cdi-with-graphics-is-ok", intel_nvidia_laptop, {}, "CDI", doctor.Check(
        "CDI", "ok", "nvidia.com/gpu=0, nvidia.com/gpu=GPU-8d2c0f2e, nvidia.com/gpu=all "
        "(injects NVIDIA's Vulkan driver and its EGL path)")),
    ("unbuilt-image-warns-with-the-build-command", None, {"images": {"rocm": False}},
     "image rocm", doctor.Check("image rocm", "warn", "not built (built on first use)",
                                "vkrama images build rocm")),
    ("no-gpu-is-fine-and-said-plainly", None, {}, "GPUs",
     doctor.Check("GPUs", "ok", "none found: cpu, vulkan/lavapipe and oneapi/opencl-cpu only")),
    ("no-intel-gpu-leaves-sycl-the-cpu-device", amd_dgpu_with_kfd, {}, "oneapi", doctor.Check(
        "oneapi", "ok", "no Intel GPU: SYCL runs on Intel's OpenCL CPU device only "
        "(oneapi/opencl-cpu, a test device, asked for with --backend oneapi)")),
    ("an-intel-gpu-is-oneapis-through-level-zero", intel_nvidia_laptop, {}, "oneapi",
     doctor.Check("oneapi", "ok", "GPU 0: i915 → Level Zero on /dev/dri/renderD128")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "facts", "name", "expected"),
    [row[1:] for row in DOCTOR],
    ids=[row[0] for row in DOCTOR],
)
def test_doctor_judges_facts_and_gives_a_fix_for_each_problem(
    tmp_path: Path,
    build: Callable[[FakeHost], None] | None,
    facts: dict[str, Any],
    name: str,
    expected: doctor.Check,
) -> None:
    host = FakeHost(tmp_path)
    if build:
        build(host)
    assert checks_of(host, **facts)[name] == dataclasses.replace(
        expected, detail=expected.detail.replace("{cdi}", str(host.cdi))
    )


def test_doctor_lists_every_gpu_device_node_it_checked(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    amd_dgpu_with_kfd(host)
    checks = checks_of(host)
    assert checks["/dev/dri/renderD128"].status == "ok"
    assert checks["/dev/kfd"].detail.endswith(f"(gid {host.render_gid})")


def test_doctor_reads_default_ulimits_from_the_last_containers_conf(tmp_path: Path) -> None:
    first, second = tmp_path / "a.conf", tmp_path / "b.conf"
    first.write_text('[containers]\ndefault_ulimits = ["nofile=1:1"]\n')
    second.write_text('[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=9:9"]\n')
    assert doctor._default_ulimits((first, second, tmp_path / "absent.conf")) == (
        "nofile=4096:4096", "nproc=9:9",
    )  # fmt: skip


@pytest.mark.podman
def test_doctor_on_this_machine_finds_podman_and_its_runtime(vkrama: Callable[..., Any]) -> None:
    done = vkrama("doctor", "--json")
    data = json.loads(done.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["podman"]["status"] == "ok", checks["podman"]
    assert checks["OCI runtime"]["status"] == "ok"
    assert done.returncode == (0 if data["ok"] else 1)


# -- lavapipe for real ---------------------------------------------------------------------------


@pytest.mark.podman
@pytest.mark.slow
def test_lavapipe_profile_shows_exactly_one_vulkan_device_llvmpipe(
    engine: Engine, backend_image: Callable[[str], str]
) -> None:
    image = backend_image("vulkan")
    profile = detect()  # the real host: lavapipe passes no device whatever it has
    choice = choose(profile, vk_driver="lavapipe")
    spec = ContainerSpec(
        image=image,
        command=("vulkaninfo", "--summary"),
        devices=choice.devices,
        group_add=choice.group_add,
        env=choice.env,
        labels={"vkrama.role": "devices-test"},
    )
    done = engine.run_to_completion(spec, timeout=120)
    assert done.exit_code == 0, done.stderr
    names = [line.split("=", 1)[1].strip() for line in done.stdout.splitlines()
             if line.strip().startswith("deviceName")]  # fmt: skip
    assert len(names) == 1, done.stdout
    assert names[0].startswith("llvmpipe")
    assert "PHYSICAL_DEVICE_TYPE_CPU" in done.stdout
