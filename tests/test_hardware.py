"""hardware.detect() on fake /sys and /dev trees laid out the way kernels lay them out."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakesys import (
    GIB,
    FakeHost,
    amd_dgpu_with_kfd,
    intel_nvidia_laptop,
    no_gpu,
    nvidia_cdi_spec,
    two_amd_gpus,
    virtio_gpu,
)

from vkrama.hardware import detect, gfx_name

# (index, ids, kernel driver, pci address, name, vram, render node, card node, gfx target)
SCENARIOS: list[tuple[str, Callable[[FakeHost], None], list[tuple[object, ...]]]] = [
    (
        "one-amd-dgpu-with-kfd-is-found-with-its-nodes-vram-and-gfx-target",
        amd_dgpu_with_kfd,
        [(0, "1002:744c", "amdgpu", "0000:03:00.0",
          "AMD Navi 31 [Radeon RX 7900 XT/7900 XTX/7900 GRE/7900M]", 24 * GIB,
          "/dev/dri/renderD128", "/dev/dri/card1", "gfx1100")],
    ),
    (
        "intel-igpu-and-nvidia-dgpu-laptop-lists-both-in-pci-order",
        intel_nvidia_laptop,
        [(0, "8086:a7a0", "i915", "0000:00:02.0", "Intel Raptor Lake-P [Iris Xe Graphics]",
          None, "/dev/dri/renderD128", "/dev/dri/card0", None),
         (1, "10de:28e0", "nvidia", "0000:01:00.0",
          "NVIDIA AD107M [GeForce RTX 4060 Max-Q / Mobile]", None,
          "/dev/dri/renderD129", "/dev/dri/card1", None)],
    ),
    (
        "two-amd-gpus-each-get-their-own-render-node-and-kfd-target",
        two_amd_gpus,
        [(0, "1002:73bf", "amdgpu", "0000:03:00.0",
          "AMD Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]",
          16 * GIB, "/dev/dri/renderD128", "/dev/dri/card0", "gfx1030"),
         (1, "1002:744c", "amdgpu", "0000:0c:00.0",
          "AMD Navi 31 [Radeon RX 7900 XT/7900 XTX/7900 GRE/7900M]", 24 * GIB,
          "/dev/dri/renderD129", "/dev/dri/card1", "gfx1100")],
    ),
    (
        "virtio-gpu-takes-ids-from-the-pci-function-and-driver-from-virtio0",
        virtio_gpu,
        [(0, "1af4:1050", "virtio_gpu", "0000:00:02.0", "virtio Virtio 1.0 GPU", None,
          "/dev/dri/renderD128", "/dev/dri/card0", None)],
    ),
    ("no-gpu-gives-an-empty-profile-without-problems", no_gpu, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "expected"), [(b, e) for _, b, e in SCENARIOS], ids=[i for i, _, _ in SCENARIOS]
)
def test_detect_finds_each_gpu_as_the_kernel_shows_it(
    tmp_path: Path, build: Callable[[FakeHost], None], expected: list[tuple[object, ...]]
) -> None:
    host = FakeHost(tmp_path)
    build(host)
    profile = host.detect()
    got = [
        (g.index, g.ids, g.kernel_driver, g.pci_address, g.name, g.vram_bytes,
         g.render_node, g.card_node, g.gfx_target)
        for g in profile.gpus
    ]  # fmt: skip
    assert got == expected
    assert profile.problems == ()


def test_device_nodes_carry_their_owning_gid_and_access(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    amd_dgpu_with_kfd(host)
    host.add_nvidia_nodes(0)
    profile = host.detect()
    assert profile.kfd == "/dev/kfd"
    render, card, kfd = (
        profile.node(p) for p in ("/dev/dri/renderD128", "/dev/dri/card1", "/dev/kfd")
    )
    assert render and card and kfd
    assert (render.gid, card.gid, kfd.gid) == (host.render_gid, host.video_gid, host.render_gid)
    assert render.mode == 0o660 and render.accessible
    assert profile.nvidia_nodes == ("/dev/nvidia-uvm", "/dev/nvidiactl")


def test_without_pci_ids_the_name_is_the_vendor_and_ids(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    amd_dgpu_with_kfd(host)
    assert host.detect(with_names=False).gpus[0].name == "AMD 1002:744c"
    assert host.detect(with_names=False).pci_ids is None


def test_a_render_node_missing_under_dev_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    amd_dgpu_with_kfd(host)
    (host.dev / "dri" / "renderD128").unlink()
    profile = host.detect()
    assert profile.gpus[0].render_node == "/dev/dri/renderD128"
    assert profile.node("/dev/dri/renderD128") is None
    assert profile.problems == (
        "/dev/dri/renderD128: the kernel lists it in sysfs but it is missing under /dev",
    )


def test_nvidia_gpu_without_drm_node_is_found_through_its_pci_class(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.add_gpu("0000:17:00.0", "10de", "2330", "nvidia", pci_class="0x0302")
    host.add_nvidia_nodes(1)
    (gpu,) = host.detect().gpus
    assert (gpu.ids, gpu.kernel_driver, gpu.render_node, gpu.name) == (
        "10de:2330", "nvidia", None, "NVIDIA 10de:2330",
    )  # fmt: skip


ALL = ("nvidia.com/gpu=0", "nvidia.com/gpu=GPU-8d2c0f2e", "nvidia.com/gpu=all")
ICD = "/usr/share/vulkan/icd.d/nvidia_icd.json"
EVERYTHING = ("nvidia_icd.json", "10_nvidia.json", "libGLX_nvidia.so", "libEGL_nvidia.so",
              "libnvidia-eglcore.so", "libnvidia-glvkspirv.so")  # fmt: skip


@pytest.mark.parametrize(
    ("name", "spec_args", "icd", "missing"),
    [
        ("nvidia.yaml", {}, ICD, ()),
        ("nvidia.json", {"graphics": False}, None, EVERYTHING),
        ("nvidia.yaml", {"without": ("10_nvidia.json",)}, ICD, ("10_nvidia.json",)),
        ("nvidia.yaml", {"without": ("libEGL_nvidia", "libnvidia-eglcore")}, ICD,
         ("libEGL_nvidia.so", "libnvidia-eglcore.so")),
        ("nvidia.yaml", {"without": ("nvidia_icd.json",)}, None, ("nvidia_icd.json",)),
    ],
    ids=["yaml-spec-with-graphics-injects-vulkan-and-its-egl-path",
         "json-spec-without-graphics-lacks-all-of-it",
         "spec-without-the-egl-vendor-json-is-incomplete",
         "spec-without-the-egl-libraries-is-incomplete",
         "spec-without-the-icd-json-is-incomplete"],
)  # fmt: skip
def test_cdi_specs_name_devices_and_what_nvidia_vulkan_lacks(
    tmp_path: Path,
    name: str,
    spec_args: dict[str, Any],
    icd: str | None,
    missing: tuple[str, ...],
) -> None:
    host = FakeHost(tmp_path)
    host.add_cdi_spec(nvidia_cdi_spec(**spec_args), name)
    (spec,) = host.detect().cdi_specs
    assert (spec.kind, spec.devices, spec.vulkan_icd, spec.vulkan_missing) == (
        "nvidia.com/gpu", ALL, icd, missing,
    )  # fmt: skip
    assert spec.injects_vulkan is (not missing)


def test_a_broken_cdi_spec_becomes_a_problem(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    (host.cdi / "broken.yaml").write_text("kind: [unclosed\n")
    (host.cdi / "other.json").write_text('{"cdiVersion": "0.5.0"}')
    profile = host.detect()
    assert profile.cdi_specs == ()
    assert profile.problems == (
        f"{host.cdi}/broken.yaml: unreadable CDI spec (invalid YAML)",
        f"{host.cdi}/other.json: not a CDI spec (no kind)",
    )


@pytest.mark.parametrize(
    ("version", "name"),
    [(80003, "gfx803"), (90010, "gfx90a"), (90402, "gfx942"), (100300, "gfx1030"),
     (110000, "gfx1100"), (110501, "gfx1151"), (120001, "gfx1201")],
    ids=lambda v: str(v),
)  # fmt: skip
def test_kfd_target_versions_read_as_llvm_gfx_names(version: int, name: str) -> None:
    assert gfx_name(version) == name


def test_detect_on_missing_roots_is_empty_and_leaves_the_environment_alone(
    tmp_path: Path,
) -> None:
    before = dict(os.environ)
    profile = detect(tmp_path / "sys", tmp_path / "dev", (tmp_path / "cdi",), ())
    assert (profile.gpus, profile.nodes, profile.kfd, profile.cdi_specs, profile.problems) == (
        (), (), None, (), (),
    )  # fmt: skip
    assert dict(os.environ) == before


@pytest.mark.parametrize(
    ("build", "key"),
    [(no_gpu, "none"), (amd_dgpu_with_kfd, "1002:744c"),
     (intel_nvidia_laptop, "10de:28e0+8086:a7a0"), (two_amd_gpus, "1002:73bf+1002:744c")],
    ids=["no-gpu-is-none", "one-gpu-is-its-ids", "laptop-joins-sorted-ids", "two-amd-gpus"],
)  # fmt: skip
def test_gpu_key_names_the_gpu_set_stably(
    tmp_path: Path, build: Callable[[FakeHost], None], key: str
) -> None:
    host = FakeHost(tmp_path)
    build(host)
    assert host.detect().gpu_key() == key
