"""The machine a run happened on: CPU, cores, memory, kernel, OS, tool versions and load.

Stage: benchmarks (not part of vkrama). Reads /proc, /etc/os-release and `--version`s; must
not change anything. The load average goes into every results file because other work on
a 2-core machine moves every number.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def _first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1]
    except OSError:
        pass
    return "unknown"


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if done.returncode == 0 and text else "unavailable"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def describe(vkrama: list[str], ramalama: list[str] | None) -> dict[str, str]:
    """Facts about this machine and the tools measured on it."""
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    memory = f"{int(mem_kb) / 1024 / 1024:.0f} GiB" if mem_kb.isdigit() else "unknown"
    commit = _version(["git", "rev-parse", "--short", "HEAD"])
    return {
        "cpu": _first("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "memory": memory,
        "kernel": platform.release(),
        "os": _first("/etc/os-release", "PRETTY_NAME").strip('"'),
        "python": platform.python_version(),
        "podman": _version(["podman", "--version"]).removeprefix("podman version "),
        "vkrama": _version([*vkrama, "--version"]).removeprefix("vkrama, version "),
        "ramalama": _version([*ramalama, "version"]).removeprefix("ramalama version ")
        if ramalama
        else "not installed",
        "commit": commit,
        "gpu": "none (Vulkan runs on Mesa's lavapipe, a CPU device)"
        if not Path("/dev/dri").exists()
        else "see `vkrama devices`",
    }
