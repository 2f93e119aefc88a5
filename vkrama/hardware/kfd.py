"""AMD's KFD topology: which render node is which gfx target, and which GPU is an APU.

Stage: part of hardware detection (/sys ─► HardwareProfile). Reads
/sys/class/kfd/kfd/topology/nodes/*/properties only; never prints, caches nothing, and
decides nothing about backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def gfx_name(target_version: int) -> str:
    """KFD's gfx_target_version (110000, 90010) as the LLVM target name (gfx1100, gfx90a)."""
    major, minor, step = target_version // 10000, target_version // 100 % 100, target_version % 100
    return f"gfx{major}{minor:x}{step:x}"


# gfx targets of AMD's APUs (Renoir/Cezanne, Rembrandt, Raphael, Phoenix, Strix Point,
# Krackan, Strix Halo): their GPU has no memory of its own beyond a BIOS carve-out.
APU_TARGETS = frozenset(
    {"gfx902", "gfx90c", "gfx1035", "gfx1036", "gfx1103", "gfx1150", "gfx1151", "gfx1152"}
)


@dataclass(frozen=True)
class KfdNode:
    gfx_target: str
    apu: bool


def kfd_gpu_nodes(sysfs_root: Path) -> dict[int, KfdNode]:
    """render minor -> the KFD topology's GPU node (CPU nodes have gfx_target_version 0).

    An MI300X has one node and one render node per partition (one per card in SPX mode).
    A node that also counts CPU cores is an APU (KFD's
    topology says cpu_cores_count is 0 for a discrete GPU); so is a known APU target.
    """
    nodes = sysfs_root / "class" / "kfd" / "kfd" / "topology" / "nodes"
    found: dict[int, KfdNode] = {}
    if not nodes.is_dir():
        return found
    for node in nodes.iterdir():
        props_file = node / "properties"
        if not props_file.is_file():
            continue
        props = dict(
            line.split(maxsplit=1) for line in props_file.read_text().splitlines() if " " in line
        )
        version = int(props.get("gfx_target_version", "0"))
        minor = int(props.get("drm_render_minor", "0"))
        if version and minor:
            target = gfx_name(version)
            cores = int(props.get("cpu_cores_count", "0"))
            found[minor] = KfdNode(target, cores > 0 or target in APU_TARGETS)
    return found
