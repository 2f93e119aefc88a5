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

# What NVIDIA's Vulkan driver needs inside the container: the ICD json that the loader
# reads, and the library it names (libGLX_nvidia.so.0 carries the Vulkan entry points).
VULKAN_ICD = "nvidia_icd.json"
GLX_LIBRARY = "libGLX_nvidia.so"


@dataclass(frozen=True)
class CdiSpec:
    path: Path
    kind: str  # nvidia.com/gpu
    devices: tuple[str, ...]  # fully qualified: nvidia.com/gpu=0, nvidia.com/gpu=all, =GPU-<uuid>
    vulkan_icd: str | None  # container path of nvidia_icd.json when the spec mounts it
    injects_glx: bool  # mounts libGLX_nvidia (the Vulkan ICD's library)

    @property
    def injects_vulkan(self) -> bool:
        return self.vulkan_icd is not None and self.injects_glx


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
    icd = next(
        (
            str(m.get("containerPath"))
            for m in mounts
            if Path(str(m.get("containerPath", ""))).name == VULKAN_ICD
        ),
        None,
    )
    glx = any(
        Path(str(m.get("containerPath", m.get("hostPath", "")))).name.startswith(GLX_LIBRARY)
        for m in mounts
    )
    return CdiSpec(
        path=path,
        kind=kind,
        devices=tuple(f"{kind}={d['name']}" for d in devices),
        vulkan_icd=icd,
        injects_glx=glx,
    )
