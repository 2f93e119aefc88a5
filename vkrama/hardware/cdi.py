"""CDI specs (Container Device Interface): which device names exist and what they inject.

Stage: part of hardware detection (/sys, /dev, CDI ─► HardwareProfile). Reads the spec files
in the directories it is given; never prints, never runs nvidia-ctk, never raises on a bad
spec (it becomes a problem line instead).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# What NVIDIA's Vulkan driver needs the spec to inject, by the file name inside the
# container (prefix for libraries, which nvidia-ctk mounts as libX.so.<driver version>).
# Measured on an H100 (driver 580, LD_DEBUG=libs): the loader reads nvidia_icd.json and
# loads libGLX_nvidia; the driver then initialises through EGL: glvnd's libEGL.so.1 (the
# image's) reads egl_vendor.d/10_nvidia.json, loads libEGL_nvidia, which loads
# libnvidia-eglcore, and the shader compiler libnvidia-glvkspirv (then -allocator and
# -rtcore, which only the newest drivers have, so they are not required). Without the
# vendor json the loader fails with "Could not get 'vkCreateInstance'".
VULKAN_ICD = "nvidia_icd.json"
EGL_VENDOR = "10_nvidia.json"
VULKAN_FILES = (VULKAN_ICD, EGL_VENDOR)
VULKAN_LIBRARIES = (
    "libGLX_nvidia.so",
    "libEGL_nvidia.so",
    "libnvidia-eglcore.so",
    "libnvidia-glvkspirv.so",
)
GRAPHICS_FIX = (
    "regenerate the spec with the driver's graphics libraries: "
    "`sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` on a host where NVIDIA's "
    "GL/EGL/Vulkan libraries are installed (Debian/Ubuntu: libnvidia-gl-<version>)"
)


@dataclass(frozen=True)
class CdiSpec:
    path: Path
    kind: str  # nvidia.com/gpu
    devices: tuple[str, ...]  # fully qualified: nvidia.com/gpu=0, nvidia.com/gpu=all, =GPU-<uuid>
    vulkan_icd: str | None  # container path of nvidia_icd.json when the spec mounts it
    vulkan_missing: tuple[str, ...] = ()  # of VULKAN_FILES + VULKAN_LIBRARIES, not injected

    @property
    def injects_vulkan(self) -> bool:
        """Everything NVIDIA's Vulkan driver loads from the host is injected."""
        return self.vulkan_icd is not None and not self.vulkan_missing

    def json_fields(self) -> dict[str, object]:
        """What `devices --json` adds to the fields (cli.console.to_json)."""
        return {"injects_vulkan": self.injects_vulkan}

    def vulkan_gap(self) -> str:
        """'does not inject 10_nvidia.json, libEGL_nvidia.so…' for a problem line."""
        names = ", ".join(f"{n}*" if n.endswith(".so") else n for n in self.vulkan_missing)
        return f"CDI spec {self.path} does not inject {names} (NVIDIA's Vulkan driver needs them)"


def read_cdi_specs(dirs: tuple[Path, ...], problems: list[str]) -> tuple[CdiSpec, ...]:
    specs = []
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if path.suffix not in (".json", ".yaml", ".yml") or not path.is_file():
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: cannot read CDI spec ({exc.__class__.__name__})")
                continue
            try:
                data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            except (ValueError, yaml.YAMLError):
                fmt = "JSON" if path.suffix == ".json" else "YAML"
                problems.append(f"{path}: unreadable CDI spec (invalid {fmt})")
                continue
            if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
                problems.append(f"{path}: not a CDI spec (no kind)")
                continue
            specs.append(_spec(path, data))
    return tuple(specs)


def _spec(path: Path, data: dict[str, Any]) -> CdiSpec:
    kind = data["kind"]
    devices = [d for d in data.get("devices") or [] if isinstance(d, dict) and "name" in d]
    edits = [data.get("containerEdits") or {}] + [d.get("containerEdits") or {} for d in devices]
    mounts = [m for e in edits for m in e.get("mounts") or [] if isinstance(m, dict)]
    names = [Path(str(m.get("containerPath") or m.get("hostPath") or "")).name for m in mounts]
    icd = next(
        (
            str(m.get("containerPath"))
            for m, n in zip(mounts, names, strict=True)
            if n == VULKAN_ICD
        ),
        None,
    )
    missing = [f for f in VULKAN_FILES if f not in names]
    missing += [lib for lib in VULKAN_LIBRARIES if not any(n.startswith(lib) for n in names)]
    return CdiSpec(
        path=path,
        kind=kind,
        devices=tuple(f"{kind}={d['name']}" for d in devices),
        vulkan_icd=icd,
        vulkan_missing=tuple(missing),
    )
