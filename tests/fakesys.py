"""Small fake /sys, /dev and CDI trees laid out the way Linux lays them out, symlinks included.

A GPU is a PCI function directory under devices/pci0000:00/<bridge>/<address>/ holding
vendor, device, class and a `driver` link to bus/pci/drivers/<name>; its DRM nodes are
drm/renderD<minor> and drm/card<n>, reached from class/drm/ through relative links, and
each node's `device` link points back at the function. Device nodes under dev/ are plain
files with the owner group and mode a real node would have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vkrama.hardware import HardwareProfile, detect

# Group ids as a distribution hands them out; used when we may chown (as root), else the
# tree falls back to our own gid and tests read the gid they got from `FakeHost`.
RENDER_GID = 105
VIDEO_GID = 44

PCI_IDS = """\
# tiny pci.ids for tests
1002  Advanced Micro Devices, Inc. [AMD/ATI]
\t73bf  Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]
\t744c  Navi 31 [Radeon RX 7900 XT/7900 XTX/7900 GRE/7900M]
\t\t1002 0e3b  Radeon RX 7900 XTX
\t74a1  Aqua Vanjaram [Instinct MI300X]
\t7550  Navi 48 [Radeon RX 9070/9070 XT/9070 GRE]
\t1586  Strix Halo [Radeon Graphics / Radeon 8050S / 8060S Graphics]
10de  NVIDIA Corporation
\t2684  AD102 [GeForce RTX 4090]
\t28e0  AD107M [GeForce RTX 4060 Max-Q / Mobile]
1af4  Red Hat, Inc.
\t1050  Virtio 1.0 GPU
8086  Intel Corporation
\ta7a0  Raptor Lake-P [Iris Xe Graphics]
C 00  Unclassified device
"""


def _can_chown() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class FakeHost:
    root: Path
    render_gid: int = field(init=False)
    video_gid: int = field(init=False)

    def __post_init__(self) -> None:
        self.render_gid = RENDER_GID if _can_chown() else os.getgid()
        self.video_gid = VIDEO_GID if _can_chown() else os.getgid()
        for path in (self.sysfs / "class" / "drm", self.dev, self.cdi):
            path.mkdir(parents=True, exist_ok=True)
        self.pci_ids.write_text(PCI_IDS)

    @property
    def sysfs(self) -> Path:
        return self.root / "sys"

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    @property
    def cdi(self) -> Path:
        return self.root / "etc-cdi"

    @property
    def pci_ids(self) -> Path:
        return self.root / "pci.ids"

    def detect(self, with_names: bool = True) -> HardwareProfile:
        return detect(self.sysfs, self.dev, (self.cdi,), (self.pci_ids,) if with_names else ())

    # -- building blocks -------------------------------------------------------------------

    def add_gpu(
        self,
        address: str,
        vendor: str,
        device: str,
        driver: str,
        *,
        render_minor: int | None = None,
        card: int | None = None,
        vram: int | None = None,
        gtt: int | None = None,
        gfx_target_version: int | None = None,
        kfd_cpu_cores: int = 0,
        bridge: str | None = "0000:00:01.0",
        pci_class: str = "0x030000",
    ) -> None:
        """A PCI GPU (behind `bridge`, or on the root bus when None); with `render_minor`,
        its DRM nodes in sysfs and /dev."""
        parent = self.sysfs / "devices" / "pci0000:00"
        function = parent / bridge / address if bridge else parent / address
        function.mkdir(parents=True)
        (function / "vendor").write_text(f"0x{vendor}\n")
        (function / "device").write_text(f"0x{device}\n")
        (function / "class").write_text(f"{pci_class}00\n")
        self._bind(function, "pci", driver, depth=4 if bridge else 3)
        if vram is not None:
            (function / "mem_info_vram_total").write_text(f"{vram}\n")
        if gtt is not None:
            (function / "mem_info_gtt_total").write_text(f"{gtt}\n")
        self._pci_link(address, bridge)
        if render_minor is not None:
            self._drm(function, f"renderD{render_minor}", card)
        if gfx_target_version is not None:
            assert render_minor is not None
            self._kfd_node(gfx_target_version, render_minor, kfd_cpu_cores)

    def add_virtio_gpu(self, address: str = "0000:00:02.0", render_minor: int = 128) -> None:
        """virtio-gpu: the DRM device is virtio0, a child of the PCI function."""
        function = self.sysfs / "devices" / "pci0000:00" / address
        function.mkdir(parents=True)
        (function / "vendor").write_text("0x1af4\n")
        (function / "device").write_text("0x1050\n")
        (function / "class").write_text("0x030000\n")
        self._bind(function, "pci", "virtio-pci", depth=3)
        virtio = function / "virtio0"
        virtio.mkdir()
        (virtio / "vendor").write_text("0x554d4551\n")
        (virtio / "device").write_text("0x0010\n")
        self._bind(virtio, "virtio", "virtio_gpu", depth=4)
        self._pci_link(address, None)
        self._drm(virtio, f"renderD{render_minor}", 0)

    def add_kfd(self, mode: int = 0o660, cpu_nodes: int = 1) -> None:
        """/dev/kfd and the topology's CPU nodes (one per socket: 0, 1, …); GPU nodes
        added later are numbered after them."""
        self.node("kfd", self.render_gid, mode)
        for number in range(cpu_nodes):
            cpu = self._kfd_dir() / str(number)
            cpu.mkdir(parents=True, exist_ok=True)
            (cpu / "properties").write_text(
                "cpu_cores_count 16\nsimd_count 0\ngfx_target_version 0\ndrm_render_minor 0\n"
            )

    def add_nvidia_nodes(self, gpus: int = 1) -> None:
        for name in [*(f"nvidia{i}" for i in range(gpus)), "nvidiactl", "nvidia-uvm"]:
            self.node(name, 0, 0o666)

    def add_cdi_spec(self, data: dict[str, Any], name: str = "nvidia.yaml") -> Path:
        path = self.cdi / name
        if name.endswith(".json"):
            import json

            path.write_text(json.dumps(data))
        else:
            path.write_text(yaml.safe_dump(data))
        return path

    def node(self, name: str, gid: int, mode: int = 0o660) -> Path:
        path = self.dev / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        if _can_chown():
            os.chown(path, 0, gid)
        path.chmod(mode)
        return path

    def add_rapl_zone(self, number: int = 0, wrap_uj: int = 262143328850) -> Path:
        """A RAPL package zone under powercap (intel_rapl_msr's layout); its energy_uj path.
        The default range is a real package's (262 kJ)."""
        zone = self.sysfs / "devices/virtual/powercap/intel-rapl" / f"intel-rapl:{number}"
        zone.mkdir(parents=True)
        (zone / "name").write_text(f"package-{number}\n")
        (zone / "max_energy_range_uj").write_text(f"{wrap_uj}\n")
        (zone / "energy_uj").write_text("0\n")
        link = self.sysfs / "class" / "powercap" / f"intel-rapl:{number}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"../../devices/virtual/powercap/intel-rapl/intel-rapl:{number}")
        return zone / "energy_uj"

    def add_hwmon(self, address: str, name: str, value: int = 0, number: int = 0) -> Path:
        """A hwmon file (energy1_input, power1_average, ...) of the PCI device at `address`."""
        device = (self.sysfs / "bus" / "pci" / "devices" / address).resolve()
        monitor = device / "hwmon" / f"hwmon{number}"
        monitor.mkdir(parents=True, exist_ok=True)
        (monitor / name).write_text(f"{value}\n")
        return monitor / name

    # -- internals ----------------------------------------------------------------------------

    def _bind(self, device_dir: Path, bus: str, driver: str, depth: int) -> None:
        drivers = self.sysfs / "bus" / bus / "drivers" / driver
        drivers.mkdir(parents=True, exist_ok=True)
        (device_dir / "driver").symlink_to("../" * depth + f"bus/{bus}/drivers/{driver}")

    def _pci_link(self, address: str, bridge: str | None) -> None:
        link = self.sysfs / "bus" / "pci" / "devices" / address
        link.parent.mkdir(parents=True, exist_ok=True)
        via = f"{bridge}/" if bridge else ""
        link.symlink_to(f"../../../devices/pci0000:00/{via}{address}")

    def _drm(self, device_dir: Path, render: str, card: int | None) -> None:
        relative = device_dir.relative_to(self.sysfs)
        names = [render] + ([f"card{card}", f"card{card}-DP-1"] if card is not None else [])
        for name in names:
            node_dir = device_dir / "drm" / name
            node_dir.mkdir(parents=True)
            (node_dir / "device").symlink_to(f"../../../{device_dir.name}")
            (self.sysfs / "class" / "drm" / name).symlink_to(f"../../{relative}/drm/{name}")
        self.node(f"dri/{render}", self.render_gid)
        if card is not None:
            self.node(f"dri/card{card}", self.video_gid)

    def _kfd_dir(self) -> Path:
        real = self.sysfs / "devices" / "virtual" / "kfd" / "kfd"
        link = self.sysfs / "class" / "kfd" / "kfd"
        if not link.exists():
            real.mkdir(parents=True)
            link.parent.mkdir(parents=True)
            link.symlink_to("../../devices/virtual/kfd/kfd")
        return link / "topology" / "nodes"

    def _kfd_node(self, gfx_target_version: int, render_minor: int, cpu_cores: int = 0) -> None:
        nodes = self._kfd_dir()
        nodes.mkdir(parents=True, exist_ok=True)
        number = 1 + sum(1 for n in nodes.iterdir() if n.name != "0")  # node 0 is the CPU
        node = nodes / str(number)
        node.mkdir()
        (node / "properties").write_text(
            f"cpu_cores_count {cpu_cores}\nsimd_count 192\n"
            f"gfx_target_version {gfx_target_version}\ndrm_render_minor {render_minor}\n"
        )


# What `nvidia-ctk cdi generate` mounts for the graphics capability that vkrama checks:
# the Vulkan ICD json, glvnd's EGL vendor json and the libraries the EGL path loads.
GRAPHICS_FILES = (
    "/usr/lib/x86_64-linux-gnu/libGLX_nvidia.so.580.95.05",
    "/usr/lib/x86_64-linux-gnu/libEGL_nvidia.so.580.95.05",
    "/usr/lib/x86_64-linux-gnu/libnvidia-eglcore.so.580.95.05",
    "/usr/lib/x86_64-linux-gnu/libnvidia-glsi.so.580.95.05",
    "/usr/lib/x86_64-linux-gnu/libnvidia-glvkspirv.so.580.95.05",
    "/usr/share/vulkan/icd.d/nvidia_icd.json",
    "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
)


def nvidia_cdi_spec(
    graphics: bool = True,
    uuid: str = "GPU-8d2c0f2e",
    without: tuple[str, ...] = (),
    gpus: int = 1,
) -> dict[str, Any]:
    """What `nvidia-ctk cdi generate` writes, cut down to what vkrama reads.

    `without`: graphics files left out by name (an older toolkit, a hand-written spec)."""
    mounts = [
        {
            "hostPath": "/usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05",
            "containerPath": "/usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05",
            "options": ["ro", "nosuid", "nodev", "bind"],
        },
    ]
    if graphics:
        mounts += [
            {"hostPath": path, "containerPath": path, "options": ["ro", "nosuid", "nodev", "bind"]}
            for path in GRAPHICS_FILES
            if not Path(path).name.startswith(without or ("\0",))
        ]
    node = {"deviceNodes": [{"path": "/dev/nvidia0"}, {"path": "/dev/dri/renderD129"}]}
    # nvidia-ctk names each GPU by its index (NVML's, i.e. PCI order) and by its UUID.
    devices = [{"name": "0", "containerEdits": node}, {"name": uuid, "containerEdits": node}]
    for index in range(1, gpus):
        edits = {"deviceNodes": [{"path": f"/dev/nvidia{index}"}]}
        devices += [
            {"name": str(index), "containerEdits": edits},
            {"name": f"{uuid}-{index}", "containerEdits": edits},
        ]
    return {
        "cdiVersion": "0.5.0",
        "kind": "nvidia.com/gpu",
        "devices": [*devices, {"name": "all", "containerEdits": node}],
        "containerEdits": {
            "env": ["NVIDIA_VISIBLE_DEVICES=void"],
            "deviceNodes": [{"path": "/dev/nvidiactl"}, {"path": "/dev/nvidia-uvm"}],
            "mounts": mounts,
        },
    }


# -- the hosts the tests talk about ------------------------------------------------------------

GIB = 1024**3


def amd_dgpu_with_kfd(host: FakeHost) -> None:
    """A desktop with one Radeon RX 7900 XTX (gfx1100) and ROCm's /dev/kfd."""
    host.add_gpu("0000:03:00.0", "1002", "744c", "amdgpu", render_minor=128, card=1,
                 vram=24 * GIB, gfx_target_version=110000)  # fmt: skip
    host.add_kfd()


def rx_9070_xt(host: FakeHost) -> None:
    """A desktop with a Radeon RX 9070 XT (RDNA4, Navi 48, gfx1201), discrete, 16 GiB."""
    host.add_gpu("0000:03:00.0", "1002", "7550", "amdgpu", render_minor=128, card=1,
                 vram=16 * GIB, gtt=31 * GIB, gfx_target_version=120001)  # fmt: skip
    host.add_kfd()


def strix_halo(host: FakeHost) -> None:
    """A Ryzen AI Max+ 395 (Strix Halo): its Radeon 8060S (gfx1151) is on the SoC's own
    bus with a 512 MiB VRAM carve-out; the model lives in GTT (here 96 GiB of 128)."""
    host.add_gpu("0000:c5:00.0", "1002", "1586", "amdgpu", render_minor=128, card=0,
                 vram=512 * 1024**2, gtt=96 * GIB, gfx_target_version=110501,
                 bridge="0000:00:08.1")  # fmt: skip
    host.add_kfd()


def mi300x_server(host: FakeHost, gpus: int = 8) -> None:
    """An 8× Instinct MI300X server (gfx942, 192 GiB each, SPX mode: one partition and
    so one KFD node and one render node per card): two CPU nodes, then a node per GPU."""
    host.add_kfd(cpu_nodes=2)
    for n in range(gpus):
        host.add_gpu(f"0000:{0x11 + 0x10 * n:02x}:00.0", "1002", "74a1", "amdgpu",
                     render_minor=128 + n, card=1 + n, vram=192 * GIB, gtt=1024 * GIB,
                     gfx_target_version=90402, bridge=f"0000:00:{1 + n:02x}.1",
                     pci_class="0x0380")  # fmt: skip


def intel_nvidia_laptop(host: FakeHost, cdi: bool = True, graphics: bool = True) -> None:
    """Iris Xe iGPU on the root bus plus an RTX 4060 Mobile on NVIDIA's driver."""
    host.add_gpu("0000:00:02.0", "8086", "a7a0", "i915", render_minor=128, card=0, bridge=None)
    host.add_gpu("0000:01:00.0", "10de", "28e0", "nvidia", render_minor=129, card=1)
    host.add_nvidia_nodes(1)
    if cdi:
        host.add_cdi_spec(nvidia_cdi_spec(graphics=graphics))


def two_amd_gpus(host: FakeHost) -> None:
    """An RX 6800 (gfx1030) and an RX 7900 XTX (gfx1100) behind two bridges."""
    host.add_gpu("0000:03:00.0", "1002", "73bf", "amdgpu", render_minor=128, card=0,
                 vram=16 * GIB, gfx_target_version=100300, bridge="0000:00:01.1")  # fmt: skip
    host.add_gpu("0000:0c:00.0", "1002", "744c", "amdgpu", render_minor=129, card=1,
                 vram=24 * GIB, gfx_target_version=110000, bridge="0000:00:03.1")  # fmt: skip
    host.add_kfd()


def amd_and_nvidia_desktop(host: FakeHost) -> None:
    """An RX 7900 XTX (amdgpu, /dev/kfd) and an RTX 4090 (NVIDIA's driver, CDI spec)."""
    amd_dgpu_with_kfd(host)
    host.add_gpu("0000:0a:00.0", "10de", "2684", "nvidia", render_minor=129, card=2,
                 bridge="0000:00:03.1")  # fmt: skip
    host.add_nvidia_nodes(1)
    host.add_cdi_spec(nvidia_cdi_spec())


def intel_igpu_and_amd_dgpu(host: FakeHost) -> None:
    """Iris Xe on the root bus (renderD128) and an RX 7900 XTX behind a bridge (renderD129)."""
    host.add_gpu("0000:00:02.0", "8086", "a7a0", "i915", render_minor=128, card=0, bridge=None)
    host.add_gpu("0000:03:00.0", "1002", "744c", "amdgpu", render_minor=129, card=1,
                 vram=24 * GIB, gfx_target_version=110000)  # fmt: skip
    host.add_kfd()


def two_nvidia_h100s(host: FakeHost) -> None:
    """A server with two H100s: 3D controllers with no DRM node, /dev/nvidia0-1, a CDI spec
    naming both (what the lent 2×H100 machine has)."""
    for n, address in enumerate(("0000:18:00.0", "0000:2a:00.0")):
        host.add_gpu(address, "10de", "2330", "nvidia", pci_class="0x0302",
                     bridge=f"0000:00:0{n + 1}.0")  # fmt: skip
    host.add_nvidia_nodes(2)
    host.add_cdi_spec(nvidia_cdi_spec(gpus=2))


def virtio_gpu(host: FakeHost) -> None:
    """A VM with virtio-gpu (virgl/venus on the host side cannot be seen from here)."""
    host.add_virtio_gpu()


def no_gpu(host: FakeHost) -> None:
    """A server or CI runner: nothing under /sys/class/drm, no /dev/dri."""
