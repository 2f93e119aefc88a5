"""What a test or a serving level drew: the record `bench.energy` writes.

Stage: results (records). Pure data, shared by `records` (llama-bench tests) and `levels`
(serving levels); nothing here reads a counter or prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Energy:
    """What one test drew while its counted repetitions ran, from the device's own energy
    or power counter (`bench.energy` says how). Either a figure or, in `note`, why none:
    "no power counter: ...", a test too short for the counter: never a 0 standing in."""

    counter: str = ""  # the counters summed: "NVML energy 0000:01:00.0", "RAPL package-0 (...)"
    watts: float | None = None  # the mean draw over the counted repetitions, idle included
    idle_watts: float | None = None  # measured just before the cell, with nothing running
    joules_per_token: float | None = None  # (watts - idle_watts) x seconds / tokens
    seconds: float = 0.0  # how long the counted repetitions ran
    note: str = ""  # why there is no figure ("" when there is one)

    def to_dict(self) -> dict[str, Any]:
        return {
            "counter": self.counter,
            "watts": self.watts,
            "idle_watts": self.idle_watts,
            "joules_per_token": self.joules_per_token,
            "seconds": self.seconds,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Energy:
        return cls(
            counter=str(data.get("counter", "")),
            watts=data.get("watts"),
            idle_watts=data.get("idle_watts"),
            joules_per_token=data.get("joules_per_token"),
            seconds=float(data.get("seconds") or 0.0),
            note=str(data.get("note", "")),
        )
