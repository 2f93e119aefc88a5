"""scripts/gpu-machine/nvidia_cdi.py: the CDI spec written for the GPU machine (no nvidia-ctk).

The generator reads a fake host tree laid out like the H100 machine (/dev/nvidia*,
/proc/driver/nvidia, the driver's libraries in /usr/local/nvidia/lib64 with their soname
symlinks, the Vulkan ICD json, nvidia-smi); vkrama's own CDI reader must then see the device
names and the Vulkan injection, and real podman must accept the spec's shape and let a
mounted library cover a symlinked one in an image.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from vkrama.hardware.cdi import read_cdi_specs

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu-machine" / "nvidia_cdi.py"
UUID = "GPU-6b5e6a0c-3f6b-2c51-9a48-5f3e4d2c1b0a"
VERSION = "580.159.04"
LIBS = "/usr/lib/x86_64-linux-gnu"
EGL_PATH = ("libnvidia-eglcore", "libnvidia-glsi", "libnvidia-glvkspirv", "libnvidia-allocator",
            "libnvidia-rtcore")  # fmt: skip


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nvidia_cdi", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["nvidia_cdi"] = module
    spec.loader.exec_module(module)
    return module


nvidia_cdi = _load()


def h100_machine(root: Path, proc: bool = True) -> None:
    """The GPU machine as seen there: one GPU, driver libraries with soname links, no /dev/dri."""
    dev = root / "dev"
    dev.mkdir(parents=True)
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        (dev / name).write_text("")
    (dev / "nvidia-caps").mkdir()  # a directory: not a device node
    if proc:
        gpu = root / "proc/driver/nvidia/gpus/0000:00:05.0"
        gpu.mkdir(parents=True)
        (gpu / "information").write_text(
            f"Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 40\nGPU UUID: \t {UUID}\n"
            "Video BIOS: \t ??.??.??.??.??\nBus Type: \t PCIe\nDevice Minor: \t 0\n"
        )
    lib = root / "usr/local/nvidia/lib64"
    lib.mkdir(parents=True)
    for name, soname in (
        ("libcuda", "libcuda.so.1"),
        ("libnvidia-ml", "libnvidia-ml.so.1"),
        ("libnvidia-ptxjitcompiler", "libnvidia-ptxjitcompiler.so.1"),
        ("libGLX_nvidia", "libGLX_nvidia.so.0"),
        ("libGLESv1_CM_nvidia", "libGLESv1_CM_nvidia.so.1"),
        ("libEGL_nvidia", "libEGL_nvidia.so.0"),
    ):
        (lib / f"{name}.so.{VERSION}").write_text(name)  # not ELF: the soname comes from links
        (lib / soname).symlink_to(f"{name}.so.{VERSION}")
    # The EGL path's libraries (LD_DEBUG=libs there); their soname is the versioned name.
    for name in EGL_PATH:
        (lib / f"{name}.so.{VERSION}").write_text(name)
    (lib / "libcuda.so").symlink_to("libcuda.so.1")
    vendor = root / "usr/local/nvidia/share/glvnd/egl_vendor.d"
    vendor.mkdir(parents=True)
    (vendor / "10_nvidia.json").write_text('{"ICD": {"library_path": "libEGL_nvidia.so.0"}}')
    (lib / "libfoo.so.1").write_text("not the driver's")
    icd = root / "usr/share/vulkan/icd.d"
    icd.mkdir(parents=True)
    (icd / "nvidia_icd.json").write_text('{"ICD": {"library_path": "libGLX_nvidia.so.0"}}')
    (root / "usr/local/nvidia/bin").mkdir()
    (root / "usr/local/nvidia/bin/nvidia-smi").write_text("")


def _mounts(data: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m["hostPath"], m["containerPath"]) for m in data["containerEdits"]["mounts"]}


def _spec(tmp_path: Path, proc: bool = True, smi: str | None = None) -> dict[str, Any]:
    h100_machine(tmp_path, proc)
    return dict(nvidia_cdi.spec(tmp_path, ("/usr/local/nvidia/lib64",), smi))


LIB = f"/usr/local/nvidia/lib64/libcuda.so.{VERSION}"
CHECKS: list[tuple[str, Callable[[dict[str, Any]], object], object]] = [
    (
        "devices-are-the-index-the-uuid-and-all-as-nvidia-ctk-names-them",
        lambda d: [dev["name"] for dev in d["devices"]],
        ["0", UUID, "all"],
    ),
    (
        "the-gpu-node-belongs-to-its-devices-the-control-nodes-to-every-container",
        lambda d: (
            d["devices"][0]["containerEdits"]["deviceNodes"],
            d["containerEdits"]["deviceNodes"],
        ),
        (
            [{"path": "/dev/nvidia0"}],
            [{"path": p} for p in ("/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidiactl")],
        ),
    ),
    (
        "a-driver-library-is-mounted-at-its-host-path-and-under-its-soname-where-ld-so-looks",
        lambda d: {(LIB, LIB), (LIB, f"{LIBS}/libcuda.so.1")} <= _mounts(d),
        True,
    ),
    (
        "glx-and-gles-libraries-with-underscores-are-driver-libraries-too",
        lambda d: (
            {c for _, c in _mounts(d)}
            >= {
                f"{LIBS}/libGLX_nvidia.so.0",
                f"{LIBS}/libGLESv1_CM_nvidia.so.1",
            }
        ),
        True,
    ),
    (
        "a-library-that-is-not-the-drivers-is-left-out",
        lambda d: [h for h, _ in _mounts(d) if "libfoo" in h],
        [],
    ),
    (
        "each-library-is-mounted-once-per-path-however-many-links-point-at-it",
        lambda d: len([c for h, c in _mounts(d) if "libcuda" in h]),
        2,
    ),
    (
        "the-vulkan-icd-json-and-nvidia-smi-are-mounted-where-images-look",
        lambda d: (
            {
                (
                    "/usr/share/vulkan/icd.d/nvidia_icd.json",
                    "/usr/share/vulkan/icd.d/nvidia_icd.json",
                ),
                ("/usr/local/nvidia/bin/nvidia-smi", "/usr/bin/nvidia-smi"),
            }
            <= _mounts(d)
        ),
        True,
    ),
    (
        "the-egl-vendor-json-is-mounted-where-glvnd-looks",
        lambda d: (
            (
                "/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json",
                "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
            )
            in _mounts(d)
        ),
        True,
    ),
    (
        "the-egl-path-libraries-are-mounted-under-their-names-where-ld-so-looks",
        lambda d: (
            {f"{LIBS}/{n}.so.{VERSION}" for n in EGL_PATH} | {f"{LIBS}/libEGL_nvidia.so.0"}
            <= {c for _, c in _mounts(d)}
        ),
        True,
    ),
    (
        "mounts-are-read-only-visible-devices-void-and-capabilities-include-graphics",
        lambda d: (
            {tuple(m["options"]) for m in d["containerEdits"]["mounts"]},
            d["containerEdits"]["env"],
            d["cdiVersion"],
        ),
        (
            {("ro", "nosuid", "nodev", "bind")},
            ["NVIDIA_VISIBLE_DEVICES=void", "NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics"],
            "0.5.0",
        ),
    ),
]


@pytest.mark.parametrize(("check", "expected"), [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_spec_for_the_h100_machine(
    tmp_path: Path, check: Callable[[dict[str, Any]], object], expected: object
) -> None:
    assert check(_spec(tmp_path)) == expected


def test_without_proc_the_uuid_comes_from_nvidia_smi(tmp_path: Path) -> None:
    data = _spec(tmp_path, proc=False, smi=f"0, {UUID}, 00000000:00:05.0\n")
    assert [dev["name"] for dev in data["devices"]] == ["0", UUID, "all"]


def test_without_proc_or_nvidia_smi_only_index_and_all_are_named(tmp_path: Path) -> None:
    data = _spec(tmp_path, proc=False)
    assert [dev["name"] for dev in data["devices"]] == ["0", "all"]


def test_a_host_without_nvidia_device_nodes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    with pytest.raises(SystemExit, match="no /dev/nvidiaN"):
        nvidia_cdi.spec(tmp_path)


def test_soname_is_read_from_a_real_elf_library() -> None:
    libc = next(
        p for p in (Path("/lib/x86_64-linux-gnu/libc.so.6"), Path("/lib64/libc.so.6")) if p.exists()
    )
    assert nvidia_cdi.soname(libc) == "libc.so.6"
    assert nvidia_cdi.soname(Path(__file__)) is None


def test_vkrama_reads_the_written_spec_as_a_gpu_with_nvidias_vulkan_driver(tmp_path: Path) -> None:
    h100_machine(tmp_path / "host")
    out = tmp_path / "cdi" / "nvidia.yaml"
    code = nvidia_cdi.main(["--root", str(tmp_path / "host"), "--output", str(out),
                            "--lib-dir", "/usr/local/nvidia/lib64"])  # fmt: skip
    assert code == 0 and yaml.safe_load(out.read_text())["kind"] == "nvidia.com/gpu"
    problems: list[str] = []
    (spec,) = read_cdi_specs((tmp_path / "cdi",), problems)
    assert problems == []
    assert spec.devices == ("nvidia.com/gpu=0", f"nvidia.com/gpu={UUID}", "nvidia.com/gpu=all")
    assert spec.vulkan_icd == "/usr/share/vulkan/icd.d/nvidia_icd.json"
    assert spec.vulkan_missing == ()
    assert spec.injects_vulkan


@pytest.mark.podman
def test_podman_injects_the_spec_and_a_mount_covers_a_symlinked_library_in_the_image(
    tmp_path: Path, backend_image: Callable[[str], str]
) -> None:
    """Podman 4.3 reads only /etc/cdi and /var/run/cdi, so a uniquely named spec goes there."""
    image = backend_image("cpu")
    lib = tmp_path / "libggml.so.9.9.9"
    lib.write_text("HOST LIBRARY\n")
    kind = f"test-{os.getpid()}.vkrama.example/gpu"
    data = {
        "cdiVersion": nvidia_cdi.CDI_VERSION,
        "kind": kind,
        "devices": [{"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/zero"}]}}],
        "containerEdits": {
            "env": ["NVIDIA_VISIBLE_DEVICES=void"],
            "deviceNodes": [{"path": "/dev/full"}],
            # libggml.so.0 is a symlink in the image (to libggml.so.0.27.0), as Debian's
            # libcuda.so.1 is in the cuda image: the mount must land on the link's target.
            "mounts": [nvidia_cdi._mount(str(lib), f"{LIBS}/libggml.so.0")],
        },
    }
    spec_file = Path("/var/run/cdi") / f"vkrama-test-{os.getpid()}.yaml"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(nvidia_cdi.render(data))
    try:
        run = subprocess.run(
            ["podman", "run", "--rm", "--network=none", "--device", f"{kind}=0", image, "sh", "-c",
             f"cat $(readlink -f {LIBS}/libggml.so.0); ls /dev/full; echo $NVIDIA_VISIBLE_DEVICES"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    finally:
        spec_file.unlink()
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["HOST", "LIBRARY", "/dev/full", "void"]
