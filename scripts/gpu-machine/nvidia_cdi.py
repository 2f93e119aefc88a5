#!/usr/bin/env python3
"""Write the CDI spec `nvidia-ctk cdi generate` would write, for a host without the toolkit.

Stage: outside vkrama's pipeline; it prepares a host (the GPU machine of scripts/gpu-machine)
so that vkrama's normal NVIDIA path (hardware.detect reads /etc/cdi, backends passes
`--device nvidia.com/gpu=0`) is what runs there. It reads /dev, /proc/driver/nvidia and the
driver's library directory, and writes only the spec file it is asked for; it must not
import vkrama (it runs before vkrama is installed) and needs only the standard library.

One difference from nvidia-ctk, on purpose: nvidia-ctk relies on OCI hooks
(`nvidia-cdi-hook update-ldcache`, `create-symlinks`) that do not exist here. Instead each
driver library is also mounted under its soname in /usr/lib/x86_64-linux-gnu, a directory a
Debian image's ld.so searches without a cache entry. Where the image already has a file or
symlink of that name (Debian's libcuda1 ships libcuda.so.1 -> /etc/alternatives/…), runc
follows the symlink inside the container and the host's library covers the image's, so the
user-space driver always matches the host's kernel module.

Usage: nvidia_cdi.py [--output /etc/cdi/nvidia.yaml] [--lib-dir DIR]... [--root /]
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

KIND = "nvidia.com/gpu"
CDI_VERSION = "0.5.0"  # what podman 4.3's CDI library reads; later specs are a superset
CONTAINER_LIB_DIR = "/usr/lib/x86_64-linux-gnu"
MOUNT_OPTIONS = ["ro", "nosuid", "nodev", "bind"]
LIB_DIRS = ("/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64")
BIN_DIRS = ("/usr/local/nvidia/bin", "/usr/bin", "/usr/local/bin")
# The driver's user-space libraries, by the name before ".so" (nvidia-ctk's list, in spirit).
_DRIVER_LIB = re.compile(
    r"^lib(cuda|cudadebugger|nvcuvid|nvoptix|nvidia-[A-Za-z0-9_-]+|[A-Za-z0-9_]+_nvidia)\.so(\..*)?$"
)
BINARIES = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
)
# Graphics config files the driver installs, as nvidia-ctk mounts them for the graphics
# capability: the Vulkan ICD and layers, glvnd's EGL vendor file (NVIDIA's Vulkan driver
# initialises through EGL: without 10_nvidia.json the loader cannot get vkCreateInstance,
# measured on the H100), and EGL's external platforms (GBM, Wayland) where installed.
CONFIG_FILES = (
    "vulkan/icd.d/nvidia_icd.json",
    "vulkan/implicit_layer.d/nvidia_layers.json",
    "glvnd/egl_vendor.d/10_nvidia.json",
    "egl/egl_external_platform.d/15_nvidia_gbm.json",
    "egl/egl_external_platform.d/10_nvidia_wayland.json",
)
# The driver capabilities a container of this spec has: graphics is what NVIDIA's Vulkan
# driver is (nvidia-container-runtime reads this variable; podman's CDI path ignores it).
CAPABILITIES = "compute,utility,graphics"
CONFIG_DIRS = ("/etc", "/usr/share", "/usr/local/nvidia/share")


def soname(path: Path) -> str | None:
    """DT_SONAME of a 64-bit little-endian ELF shared object, or None."""
    try:
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _soname(data)
    except (OSError, ValueError, struct.error, IndexError):
        return None  # not an ELF file we understand: the caller falls back to symlink names


def _soname(data: mmap.mmap) -> str | None:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link][4]
        for at in range(offset, offset + size, entsize or 16):
            tag, value = struct.unpack_from("<qQ", data, at)
            if tag == 0:
                break
            if tag == 14:  # DT_SONAME
                end = data.find(b"\0", strtab + value)
                return data[strtab + value : end].decode()
    return None


def gpus(root: Path, smi: str | None) -> list[dict[str, Any]]:
    """[{minor, uuid, bus}] in PCI order, from /proc/driver/nvidia, else nvidia-smi's CSV."""
    found = []
    proc = root / "proc/driver/nvidia/gpus"
    if proc.is_dir():
        for entry in sorted(proc.iterdir()):
            info = _fields((entry / "information").read_text(errors="replace"))
            if "Device Minor" in info:
                found.append(
                    {
                        "minor": int(info["Device Minor"]),
                        "uuid": info.get("GPU UUID"),
                        "bus": entry.name,
                    }
                )
    if not found and smi:
        # `--query-gpu=index,uuid,pci.bus_id`: NVML's index is the minor on one-GPU hosts.
        for line in smi.strip().splitlines():
            index, uuid, bus = (part.strip() for part in line.split(","))
            found.append({"minor": int(index), "uuid": uuid, "bus": bus.lower()})
    return found


def _fields(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def driver_libraries(root: Path, lib_dirs: tuple[str, ...]) -> dict[str, Path]:
    """{host path of each real library file: its soname (or its own name)}, first dir wins."""
    libs: dict[str, Path] = {}
    seen_names: set[str] = set()
    for directory in lib_dirs:
        base = root / directory.lstrip("/")
        if not base.is_dir():
            continue
        for path in sorted(base.iterdir()):
            if not _DRIVER_LIB.match(path.name) or not path.exists():
                continue
            real = path.resolve()
            try:
                host = "/" + str(real.relative_to(root.resolve()))
            except ValueError:
                continue  # a link out of the tree being read
            name = soname(real) or _soname_from_links(real) or real.name
            if name in seen_names and host not in libs:
                continue  # the same library in a later directory (e.g. a compat copy)
            seen_names.add(name)
            libs.setdefault(host, real)
    return {host: real for host, real in libs.items()}


def _soname_from_links(real: Path) -> str | None:
    """The shortest libX.so.N link beside `real` pointing at it (driver installers make one)."""
    names = [
        link.name
        for link in real.parent.iterdir()
        if link.is_symlink() and link.resolve() == real and re.search(r"\.so\.\d+$", link.name)
    ]
    return min(names, key=len) if names else None


def spec(
    root: Path = Path("/"), lib_dirs: tuple[str, ...] = LIB_DIRS, smi: str | None = None
) -> dict[str, Any]:
    """The CDI spec for the NVIDIA GPUs of the host whose / is `root`."""
    dev = root / "dev"
    nodes = sorted(p.name for p in dev.glob("nvidia*") if not p.is_dir()) if dev.is_dir() else []
    per_gpu = {int(m[1]): f"/dev/{n}" for n in nodes if (m := re.fullmatch(r"nvidia(\d+)", n))}
    common = [f"/dev/{n}" for n in nodes if not re.fullmatch(r"nvidia(\d+)", n)]
    if not per_gpu:
        raise SystemExit(f"no /dev/nvidiaN under {dev}: no NVIDIA GPU on its driver here")

    known = {gpu["minor"]: gpu for gpu in gpus(root, smi)}
    devices = []
    for index, minor in enumerate(sorted(per_gpu)):
        edits = {"deviceNodes": [{"path": per_gpu[minor]}]}
        devices.append({"name": str(index), "containerEdits": edits})
        uuid = known.get(minor, {}).get("uuid")
        if uuid:
            devices.append({"name": uuid, "containerEdits": edits})
    devices.append(
        {
            "name": "all",
            "containerEdits": {"deviceNodes": [{"path": per_gpu[m]} for m in sorted(per_gpu)]},
        }
    )

    mounts = []
    for host, real in sorted(driver_libraries(root, lib_dirs).items()):
        mounts.append(_mount(host, host))
        name = soname(real) or _soname_from_links(real)
        alias = f"{CONTAINER_LIB_DIR}/{name or real.name}"
        if alias != host:
            mounts.append(_mount(host, alias))
    for name in BINARIES:
        found = next((d for d in BIN_DIRS if (root / d.lstrip("/") / name).is_file()), None)
        if found:
            mounts.append(_mount(f"{found}/{name}", f"/usr/bin/{name}"))
    for relative in CONFIG_FILES:
        for directory in CONFIG_DIRS:
            if (root / directory.lstrip("/") / relative).is_file():
                inside = "/etc" if directory == "/etc" else "/usr/share"
                mounts.append(_mount(f"{directory}/{relative}", f"{inside}/{relative}"))
                break
    return {
        "cdiVersion": CDI_VERSION,
        "kind": KIND,
        "devices": devices,
        "containerEdits": {
            "env": ["NVIDIA_VISIBLE_DEVICES=void", f"NVIDIA_DRIVER_CAPABILITIES={CAPABILITIES}"],
            "deviceNodes": [{"path": path} for path in common],
            "mounts": mounts,
        },
    }


def _mount(host: str, container: str) -> dict[str, Any]:
    return {"hostPath": host, "containerPath": container, "options": MOUNT_OPTIONS}


def render(data: dict[str, Any]) -> str:
    """YAML when PyYAML is importable (as nvidia-ctk writes), else JSON (also valid YAML)."""
    try:
        import yaml
    except ImportError:
        return json.dumps(data, indent=2) + "\n"
    return str(yaml.safe_dump(data, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="/etc/cdi/nvidia.yaml", help="'-' for stdout")
    parser.add_argument("--root", type=Path, default=Path("/"), help="read another host's tree")
    parser.add_argument("--lib-dir", action="append", help="driver library directories")
    args = parser.parse_args(argv)
    smi = None
    if shutil.which("nvidia-smi") and args.root == Path("/"):
        query = ["nvidia-smi", "--query-gpu=index,uuid,pci.bus_id", "--format=csv,noheader"]
        run = subprocess.run(query, capture_output=True, text=True, check=False)
        smi = run.stdout if run.returncode == 0 else None
    text = render(spec(args.root, tuple(args.lib_dir or LIB_DIRS), smi))
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp")
    temp.write_text(text)
    os.replace(temp, out)  # a reader never sees half a spec
    return 0


if __name__ == "__main__":
    sys.exit(main())
