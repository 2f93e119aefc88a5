"""Hardware detection: GPUs, their device nodes and NVIDIA CDI specs, read from /sys and /dev.

Stage: /sys, /dev, CDI ─► `detect()` ─► `HardwareProfile`. A pure function of the roots it
is given: it only reads files, never prints, never touches `os.environ`, caches nothing, and
decides nothing about backends (that is `vkrama.backends`). Anything odd it meets becomes a line
in `HardwareProfile.problems`, not an exception.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vkrama.config import Settings
from vkrama.hardware.cdi import CdiSpec, read_cdi_specs
from vkrama.hardware.kfd import kfd_gpu_nodes

PCI_IDS_PATHS = (Path("/usr/share/misc/pci.ids"), Path("/usr/share/hwdata/pci.ids"))
CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))

# Short vendor names: pci.ids says "Advanced Micro Devices, Inc. [AMD/ATI]", too long for a table.
VENDORS = {"1002": "AMD", "8086": "Intel", "10de": "NVIDIA", "1af4": "virtio", "1ab8": "Parallels"}
_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
# PCI class codes of display controllers (VGA, 3D, other): finds GPUs without a DRM node,
# e.g. an NVIDIA datacenter card whose driver creates only /dev/nvidia*.
_DISPLAY_CLASSES = ("0x0300", "0x0302", "0x0380")


@dataclass(frozen=True)
class DeviceNode:
    """A device file: `path` as the host names it (/dev/…), whatever dev_root was read."""

    path: str
    gid: int
    mode: int
    accessible: bool  # the current user can open it read-write


@dataclass(frozen=True)
class Gpu:
    index: int  # position in PCI-address order; what `--gpu N` means
    vendor_id: str  # "1002", lower-case hex without 0x
    device_id: str  # "744c"
    kernel_driver: str  # amdgpu, i915, xe, nouveau, nvidia, virtio_gpu, … or "" when unbound
    pci_address: str  # 0000:03:00.0 ("" for a non-PCI GPU)
    name: str  # from pci.ids, else the ids
    vram_bytes: int | None  # where the driver exposes it (amdgpu)
    render_node: str | None  # /dev/dri/renderD128
    card_node: str | None  # /dev/dri/card1
    gfx_target: str | None = None  # AMD KFD topology, e.g. "gfx1100"
    gtt_bytes: int | None = None  # system memory the GPU can map (amdgpu's GTT)
    apu: bool = False  # shares the CPU's memory: its VRAM is only a small carve-out

    @property
    def memory_bytes(self) -> int | None:
        """What a model can occupy: VRAM, plus GTT on an APU (Strix Halo: 0.5 GiB of VRAM
        carve-out but ~100 GiB of GTT, which HIP and RADV both allocate from)."""
        if self.apu and self.gtt_bytes:
            return (self.vram_bytes or 0) + self.gtt_bytes
        return self.vram_bytes

    @property
    def vendor(self) -> str:
        return VENDORS.get(self.vendor_id, self.vendor_id or "unknown")

    @property
    def ids(self) -> str:
        return f"{self.vendor_id}:{self.device_id}"

    def json_fields(self) -> dict[str, object]:
        """What `devices --json` adds to the fields (cli.console.to_json)."""
        return {"ids": self.ids, "vendor": self.vendor}


@dataclass(frozen=True)
class HardwareProfile:
    gpus: tuple[Gpu, ...]
    nodes: tuple[DeviceNode, ...]  # every /dev node looked at: dri, kfd, nvidia*
    kfd: str | None  # "/dev/kfd" when present
    nvidia_nodes: tuple[str, ...]  # /dev/nvidia0, /dev/nvidiactl, …
    cdi_specs: tuple[CdiSpec, ...]
    pci_ids: Path | None  # the name database used, if any
    problems: tuple[str, ...] = ()

    def node(self, path: str) -> DeviceNode | None:
        return next((node for node in self.nodes if node.path == path), None)

    def cdi_devices(self, kind: str = "nvidia.com/gpu") -> tuple[str, ...]:
        """Fully qualified CDI device names of one kind, e.g. nvidia.com/gpu=0."""
        return tuple(name for spec in self.cdi_specs if spec.kind == kind for name in spec.devices)

    def gpu_key(self, gpu: int | None = None) -> str:
        """What identifies "this GPU" across runs (bench stores it, `serve --backend best`
        matches on it): the ids of GPU `gpu` when one is asked for by index, else the
        host's GPU set, sorted: "none", "1002:744c", "10de:28e0+8086:a7a0"."""
        chosen = [g for g in self.gpus if g.index == gpu] if gpu is not None else []
        return chosen[0].ids if chosen else "+".join(sorted(g.ids for g in self.gpus)) or "none"


def detect_host(settings: Settings) -> HardwareProfile:
    """`detect()` on the roots the settings name (the real /sys and /dev by default)."""
    return detect(
        Path(settings["hardware.sysfs_root"]),
        Path(settings["hardware.dev_root"]),
        tuple(Path(d) for d in settings["hardware.cdi_dirs"]),
        tuple(Path(p) for p in settings["hardware.pci_ids"]),
    )


def detect(
    sysfs_root: Path = Path("/sys"),
    dev_root: Path = Path("/dev"),
    cdi_dirs: tuple[Path, ...] = CDI_DIRS,
    pci_ids: tuple[Path, ...] = PCI_IDS_PATHS,
) -> HardwareProfile:
    """Read the GPUs and device nodes of the host whose /sys and /dev are at these roots."""
    problems: list[str] = []
    found = _drm_devices(sysfs_root, problems)
    for address, device_dir in _pci_display_devices(sysfs_root):
        if address not in {entry.pci_address for entry in found}:
            found.append(_Found(address, device_dir, device_dir, None, None))
    found.sort(key=lambda entry: (entry.pci_address == "", entry.pci_address, entry.render or ""))

    database = next((path for path in pci_ids if path.is_file()), None)
    wanted = {(_read_id(e.ids_dir, "vendor"), _read_id(e.ids_dir, "device")) for e in found}
    names = _pci_names(database, wanted) if database else {}
    kfd = kfd_gpu_nodes(sysfs_root)

    gpus = []
    for index, entry in enumerate(found):
        vendor, device = _read_id(entry.ids_dir, "vendor"), _read_id(entry.ids_dir, "device")
        driver_link = entry.driver_dir / "driver"
        driver = os.path.basename(os.readlink(driver_link)) if driver_link.is_symlink() else ""
        render = f"/dev/dri/{entry.render}" if entry.render else None
        minor = int(entry.render.removeprefix("renderD")) if entry.render else None
        topology = kfd.get(minor) if minor is not None else None
        gpus.append(
            Gpu(
                index=index,
                vendor_id=vendor,
                device_id=device,
                kernel_driver=driver,
                pci_address=entry.pci_address,
                name=names.get((vendor, device)) or _fallback_name(vendor, device, driver),
                vram_bytes=_read_int(entry.driver_dir / "mem_info_vram_total"),
                render_node=render,
                card_node=f"/dev/dri/{entry.card}" if entry.card else None,
                gfx_target=topology.gfx_target if topology else None,
                gtt_bytes=_read_int(entry.driver_dir / "mem_info_gtt_total"),
                apu=bool(topology and topology.apu),
            )
        )

    paths = [p for g in gpus for p in (g.render_node, g.card_node) if p]
    kfd_node = "/dev/kfd" if (dev_root / "kfd").exists() else None
    nvidia = (
        sorted(f"/dev/{p.name}" for p in dev_root.glob("nvidia*") if not p.is_dir())
        if dev_root.is_dir()
        else []
    )
    nodes = []
    for path in [*paths, *([kfd_node] if kfd_node else []), *nvidia]:
        node = _stat_node(dev_root, path)
        if node is None:
            problems.append(f"{path}: the kernel lists it in sysfs but it is missing under /dev")
        else:
            nodes.append(node)
    specs = read_cdi_specs(cdi_dirs, problems)
    return HardwareProfile(
        gpus=tuple(gpus),
        nodes=tuple(nodes),
        kfd=kfd_node,
        nvidia_nodes=tuple(nvidia),
        cdi_specs=specs,
        pci_ids=database,
        problems=tuple(problems),
    )


@dataclass
class _Found:
    pci_address: str
    ids_dir: Path  # where vendor/device are (the PCI function)
    driver_dir: Path  # the DRM node's own device (virtio0 for virtio-gpu)
    render: str | None
    card: str | None


def _drm_devices(sysfs_root: Path, problems: list[str]) -> list[_Found]:
    drm = sysfs_root / "class" / "drm"
    if not drm.is_dir():
        return []
    by_device: dict[Path, _Found] = {}
    entries = sorted(drm.iterdir(), key=lambda p: (not p.name.startswith("renderD"), p.name))
    for entry in entries:
        if not re.fullmatch(r"(renderD|card)\d+", entry.name):
            continue  # card1-DP-1 and friends are connectors, not devices
        device_link = entry / "device"
        if not device_link.exists():
            problems.append(f"{drm.name}/{entry.name} has no device link; skipped")
            continue
        device_dir = device_link.resolve()
        found = by_device.get(device_dir)
        if found is None:
            if entry.name.startswith("card"):
                continue  # a display-only device (simpledrm, efifb) has no render node
            # virtio-gpu's DRM device is virtio0, a child of the PCI function holding the ids.
            ids_dir = device_dir if _is_pci(device_dir) else device_dir.parent
            address = ids_dir.name if _is_pci(ids_dir) else ""
            found = by_device[device_dir] = _Found(address, ids_dir, device_dir, entry.name, None)
        elif entry.name.startswith("card") and found.card is None:
            found.card = entry.name
    return list(by_device.values())


def _pci_display_devices(sysfs_root: Path) -> list[tuple[str, Path]]:
    pci = sysfs_root / "bus" / "pci" / "devices"
    if not pci.is_dir():
        return []
    out = []
    for link in sorted(pci.iterdir()):
        klass = (link / "class").read_text().strip() if (link / "class").is_file() else ""
        if klass.startswith(_DISPLAY_CLASSES) and _read_id(link, "vendor") in ("10de",):
            # Only NVIDIA: its proprietary driver may create no DRM node. Other vendors'
            # GPUs without a render node have no usable driver, so nothing can use them.
            out.append((link.name, link.resolve()))
    return out


def _is_pci(path: Path) -> bool:
    return bool(_PCI_ADDRESS.match(path.name))


def _read_id(directory: Path, name: str) -> str:
    path = directory / name
    if not path.is_file():
        return ""
    return path.read_text().strip().lower().removeprefix("0x")[-4:]


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _fallback_name(vendor: str, device: str, driver: str) -> str:
    if not vendor:
        return driver or "unknown GPU"
    return f"{VENDORS.get(vendor, 'GPU')} {vendor}:{device}"


def _pci_names(database: Path, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Names for the wanted (vendor, device) pairs from a pci.ids file."""
    names: dict[tuple[str, str], str] = {}
    vendors = {vendor for vendor, _ in wanted}
    vendor: str | None = None
    with database.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("C "):
                break  # the class list follows the last vendor
            if not line.strip() or line.startswith("#"):
                continue
            if not line.startswith("\t"):
                vendor = line[:4].lower() if line[:4].lower() in vendors else None
            elif vendor and not line.startswith("\t\t"):
                device = line[1:5].lower()
                if (vendor, device) in wanted:
                    short = VENDORS.get(vendor, "")
                    names[(vendor, device)] = f"{short} {line[5:].strip()}".strip()
    return names


def _stat_node(dev_root: Path, path: str) -> DeviceNode | None:
    real = dev_root / path.removeprefix("/dev/")
    try:
        info = real.stat()
    except OSError:
        return None
    return DeviceNode(path, info.st_gid, info.st_mode & 0o7777, os.access(real, os.R_OK | os.W_OK))
