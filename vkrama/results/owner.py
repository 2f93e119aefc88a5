"""Which process owns a running bench run, and whether it is still alive.

Stage: results (a run's record names its owner so that a later vkrama can tell a run that
is still going from one whose process died: kill -9, a crash, a reboot). A pid alone can
be reused, so the owner is the pid, its start time and the boot it started in. Reads /proc
only; must not signal or touch any process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class RunOwner:
    pid: int
    start_ticks: int  # field 22 of /proc/PID/stat: clock ticks after boot
    boot_id: str


def boot_id(proc: Path = PROC) -> str:
    try:
        return (proc / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int, proc: Path = PROC) -> int | None:
    try:
        text = (proc / str(pid) / "stat").read_text()
        # after "pid (comm) ", field 3 is the state; starttime is field 22
        return int(text[text.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def current(pid: int, proc: Path = PROC) -> RunOwner | None:
    ticks = start_ticks(pid, proc)
    return None if ticks is None else RunOwner(pid, ticks, boot_id(proc))


def is_dead(owner: RunOwner, proc: Path = PROC) -> bool:
    """True only when sure: another boot, or no process with this pid and start time."""
    if owner.boot_id and owner.boot_id != boot_id(proc):
        return True
    return start_ticks(owner.pid, proc) != owner.start_ticks
