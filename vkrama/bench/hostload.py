"""How busy the host was while a bench cell ran: load average, other processes' CPU, GPU users.

Stage: bench.run's witness (beside engine.run ─► judge). A number measured on a busy host
is silently wrong (one core taken by another process made a 5 s cpu cell take 88 s on a
2-core machine: llama.cpp's threads spin waiting for a descheduled sibling), so each cell
carries a `HostLoad` and the table, the verdict and the report warn about it.

The CPU time of other processes is the host's busy time (/proc/stat) less the cell's own
(its process's /proc/PID/stat, which sums every thread), both sampled at the same instants
by a thread of ours while the cell runs; reading two small files 4 times a second costs the
cell nothing measurable, unlike asking podman. Must not print or talk to podman; reads
/proc and, where present, `nvidia-smi`. Everything it cannot read is None, never a guess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vkrama.results.records import HostLoad

SAMPLE_S = 0.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GpuUsers = Callable[[], "tuple[str, ...] | None"]


def nvidia_gpu_users(timeout: float = 10.0) -> tuple[str, ...] | None:
    """Compute processes on NVIDIA GPUs as the driver lists them; None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    lines = (
        " ".join(part.strip() for part in line.split(",")) for line in done.stdout.splitlines()
    )
    return tuple(line for line in lines if line and "No running" not in line)


@dataclass
class _Sample:
    at: float
    host_busy: int  # ticks
    cell: int  # ticks


@dataclass
class LoadWatch:
    """Before, during and after one cell: `start()`, `watch(pid)`, then `finish()`."""

    proc: Path = Path("/proc")
    interval: float = SAMPLE_S
    gpu_users: GpuUsers = nvidia_gpu_users
    _before: tuple[float | None, tuple[str, ...] | None] = (None, None)
    _first: _Sample | None = None
    _last: _Sample | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._before = (self.loadavg(), self.gpu_users())

    def watch(self, pid: int) -> None:
        """Sample the host and the cell's process `pid` until it exits or `finish()`."""
        if pid <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._sample, args=(pid,), name="vkrama-hostload", daemon=True
        )
        self._thread.start()

    def finish(self) -> HostLoad:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        others = None
        first, last = self._first, self._last
        if first is not None and last is not None and last.at > first.at:
            ticks = (last.host_busy - first.host_busy) - (last.cell - first.cell)
            others = round(max(ticks, 0) / CLOCK_TICKS / (last.at - first.at), 3)
        return HostLoad(
            cpus=os.cpu_count() or 1,
            load_before=self._before[0],
            load_after=self.loadavg(),
            others_cpus=others,
            gpu_users_before=self._before[1],
            gpu_users_after=self.gpu_users(),
        )

    def _sample(self, pid: int) -> None:
        while True:
            at = time.monotonic()
            host, cell = self.host_busy_ticks(), self.process_ticks(pid)
            if host is None or cell is None:  # the cell's process is gone
                return
            sample = _Sample(at, host, cell)
            if self._first is None:
                self._first = sample
            self._last = sample
            if self._stop.wait(self.interval):
                return

    def loadavg(self) -> float | None:
        try:
            return float((self.proc / "loadavg").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def host_busy_ticks(self) -> int | None:
        """Ticks every CPU spent not idle (user nice system irq softirq steal) since boot."""
        try:
            first = (self.proc / "stat").read_text().splitlines()[0].split()
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[1:9])
        except (OSError, ValueError, IndexError):
            return None
        return user + nice + system + irq + softirq + steal

    def process_ticks(self, pid: int) -> int | None:
        """utime + stime of process `pid`, all its threads (and reaped children) included."""
        try:
            text = (self.proc / str(pid) / "stat").read_text()
            fields = text[text.rindex(")") + 2 :].split()
            # fields[0] is field 3 (state); utime stime cutime cstime are fields 14-17
            return sum(int(value) for value in fields[11:15])
        except (OSError, ValueError, IndexError):
            return None
